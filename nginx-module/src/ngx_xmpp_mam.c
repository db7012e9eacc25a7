
/*
 * History: XEP-0359 stanza ids and XEP-0313 message archive management
 * for 1:1 chat, served from the audit records in MariaDB (docs/
 * history.md).  There is no archive of our own: a user's archive is the
 * set of "message" records they sent (actor_user) or received (peer),
 * so the history a user sees and the evidence compliance sees are the
 * same rows (DESIGN.md "The audit record is the product's spine").
 *
 * Ids.  A message's archive id is its record's identity,
 * "<node>:<writer>:<seq>" (audit_record's primary key): the router
 * stamps it as <stanza-id/> before the record is written, and a MAM
 * query turns it back into a position.
 *
 * Corrections (XEP-0308) and retractions (XEP-0424) are messages, hence
 * records of their own; the original is never changed.  Their records
 * carry params.replace_id / params.retract_id, which 004_mam.sql turns
 * into the indexed column mam_ref.  A query shows an original with the
 * body of its latest correction, or as a tombstone once retracted; the
 * corrections and retractions themselves stay in the history too, so a
 * client that catches up after the original still learns of them.
 *
 * The query runs in the database thread pool (ngx_xmpp_db.c); the
 * thread also builds each result's XML, so the event loop only wraps
 * and sends.
 */


#include "ngx_xmpp.h"

#include <mysql.h>
#include <jansson.h>


#define NGX_XMPP_NS_MAM_EXT    "urn:xmpp:mam:2#extended"
#define NGX_XMPP_NS_RSM        "http://jabber.org/protocol/rsm"
#define NGX_XMPP_NS_DATA       "jabber:x:data"
#define NGX_XMPP_NS_SID        "urn:xmpp:sid:0"
#define NGX_XMPP_NS_FORWARD    "urn:xmpp:forward:0"
#define NGX_XMPP_NS_DELAY      "urn:xmpp:delay"
#define NGX_XMPP_NS_CORRECT    "urn:xmpp:message-correct:0"
#define NGX_XMPP_NS_RETRACT0   "urn:xmpp:message-retract:0"
#define NGX_XMPP_NS_RETRACT1   "urn:xmpp:message-retract:1"
#define NGX_XMPP_NS_FASTEN     "urn:xmpp:fasten:0"

#define NGX_XMPP_MAM_DEFAULT_PAGE  50
#define NGX_XMPP_MAM_QID_MAX       256
#define NGX_XMPP_MAM_SHIP_WAIT     1000       /* ms */


typedef struct {
    char                  *xml;           /* the message as the user sees it */
    size_t                 len;
    int64_t                ts;
    uint64_t               writer;
    uint64_t               seq;
    char                   node[NGX_XMPP_MAM_ID_MAX];
    char                   id[NGX_XMPP_MAM_ID_MAX];
} ngx_xmpp_mam_row_t;


typedef struct {
    uint64_t               sid;
    ngx_str_t              me;            /* bare JID, points into tail */
    ngx_str_t              with;
    ngx_str_t              iq_id;
    ngx_str_t              qid;
    int64_t                start;         /* INT64_MIN: none */
    int64_t                end;           /* INT64_MAX: none */
    ngx_xmpp_mam_pos_t     after;
    ngx_xmpp_mam_pos_t     before;
    ngx_uint_t             max;
    unsigned               backward:1;

    /* until MariaDB has what was journaled before the query came */
    ngx_xmpp_audit_mark_t  marks[NGX_XMPP_AUDIT_MARKS];
    ngx_event_t            wait;
    ngx_msec_t             since;

    /* results, written by the thread */
    ngx_xmpp_mam_row_t    *rows;
    ngx_uint_t             nrows;
    ngx_uint_t             cap;
    unsigned               complete:1;
    unsigned               not_found:1;
} ngx_xmpp_mam_query_t;


static int ngx_xmpp_mam_run(MYSQL *conn, ngx_xmpp_db_req_t *r);
static int ngx_xmpp_mam_merge(ngx_xmpp_db_req_t *r,
    ngx_xmpp_mam_query_t *mq, ngx_uint_t half);
static int ngx_xmpp_mam_cmp(ngx_xmpp_mam_row_t *a, ngx_xmpp_mam_row_t *b);
static void ngx_xmpp_mam_done(ngx_xmpp_db_req_t *r);
static void ngx_xmpp_mam_free(ngx_xmpp_db_req_t *r);
static void ngx_xmpp_mam_wait(ngx_event_t *ev);


static ngx_inline ngx_uint_t
ngx_xmpp_mam_is(ngx_str_t *s, const char *lit)
{
    size_t  len;

    len = ngx_strlen(lit);

    return s->len == len && ngx_strncmp(s->data, lit, len) == 0;
}


/*
 * What the user-facing archive keeps (XEP-0313 section 5.1.1 leaves it
 * to the server): chat and normal messages with a body, and
 * corrections and retractions.  Chat states, receipts, errors,
 * headlines and groupchat are not archived here.
 */
static ngx_uint_t
ngx_xmpp_mam_archivable(ngx_xmpp_stanza_t *st)
{
    ngx_str_t  replace_id, retract_id, ns;

    if (st->type.len && !ngx_xmpp_mam_is(&st->type, "chat")
        && !ngx_xmpp_mam_is(&st->type, "normal"))
    {
        return 0;
    }

    if (ngx_xmpp_node_child(st->node, "body", NGX_XMPP_NS_CLIENT)) {
        return 1;
    }

    (void) ngx_xmpp_mam_refs(st, &replace_id, &retract_id, &ns);

    return replace_id.len || retract_id.len;
}


/*
 * The original that a message corrects (XEP-0308 section 3: <replace
 * id='...'/>) or retracts (XEP-0424: <retract id='...'/> in :1, or
 * <apply-to id='...'><retract/></apply-to> of XEP-0422 in :0).
 */
ngx_int_t
ngx_xmpp_mam_refs(ngx_xmpp_stanza_t *st, ngx_str_t *replace_id,
    ngx_str_t *retract_id, ngx_str_t *retract_ns)
{
    ngx_str_t        *v;
    ngx_xmpp_node_t  *n;

    replace_id->len = 0;
    retract_id->len = 0;
    retract_ns->len = 0;

    n = ngx_xmpp_node_child(st->node, "replace", NGX_XMPP_NS_CORRECT);
    if (n && (v = ngx_xmpp_node_attr(n, "id")) && v->len) {
        *replace_id = *v;
    }

    n = ngx_xmpp_node_child(st->node, "retract", NGX_XMPP_NS_RETRACT1);
    if (n && (v = ngx_xmpp_node_attr(n, "id")) && v->len) {
        *retract_id = *v;
        ngx_str_set(retract_ns, NGX_XMPP_NS_RETRACT1);
        return NGX_OK;
    }

    n = ngx_xmpp_node_child(st->node, "apply-to", NGX_XMPP_NS_FASTEN);
    if (n && ngx_xmpp_node_child(n, "retract", NGX_XMPP_NS_RETRACT0)
        && (v = ngx_xmpp_node_attr(n, "id")) && v->len)
    {
        *retract_id = *v;
        ngx_str_set(retract_ns, NGX_XMPP_NS_RETRACT0);
    }

    return NGX_OK;
}


/*
 * XEP-0359 section 3: the archiving entity (here the recipient's
 * account, whose archive the record also is) stamps <stanza-id
 * by='bare JID' id='...'/>, after removing any stanza-id that claims
 * to be by an archive of ours, which a client could otherwise forge.
 * <origin-id/> is the client's and is kept as it is.  id is the record
 * the audit adapter is about to append.
 */
ngx_int_t
ngx_xmpp_mam_stamp(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    u_char            buf[NGX_XMPP_MAM_ID_MAX];
    size_t            len;
    ngx_str_t        *by, v;
    ngx_xmpp_node_t  *c, *prev, *next, *n;

    prev = NULL;

    for (c = st->node->child; c; c = next) {
        next = c->next;

        if (c->name.len == sizeof("stanza-id") - 1
            && ngx_strncmp(c->name.data, "stanza-id", c->name.len) == 0
            && c->ns.len == sizeof(NGX_XMPP_NS_SID) - 1
            && ngx_strncmp(c->ns.data, NGX_XMPP_NS_SID, c->ns.len) == 0)
        {
            by = ngx_xmpp_node_attr(c, "by");

            if (by == NULL
                || (by->len == st->to.bare.len
                    && ngx_strncasecmp(by->data, st->to.bare.data, by->len)
                       == 0)
                || (by->len == s->jid.bare.len
                    && ngx_strncasecmp(by->data, s->jid.bare.data, by->len)
                       == 0))
            {
                if (prev) {
                    prev->next = next;
                } else {
                    st->node->child = next;
                }

                if (st->node->last == c) {
                    st->node->last = prev;
                }

                continue;
            }
        }

        prev = c;
    }

    if (!ngx_xmpp_mam_archivable(st)) {
        return NGX_DECLINED;
    }

    len = ngx_xmpp_audit_next_id(s->conf, buf, sizeof(buf));
    if (len == 0) {
        return NGX_DECLINED;
    }

    n = ngx_pcalloc(st->pool, sizeof(ngx_xmpp_node_t));
    if (n == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&n->name, "stanza-id");
    ngx_str_set(&n->ns, NGX_XMPP_NS_SID);
    n->parent = st->node;

    v.data = ngx_pnalloc(st->pool, len);
    if (v.data == NULL) {
        return NGX_ERROR;
    }

    v.len = len;
    ngx_memcpy(v.data, buf, len);

    if (ngx_xmpp_node_set_attr(st->pool, n, "id", &v) != NGX_OK
        || ngx_xmpp_node_set_attr(st->pool, n, "by", &st->to.bare)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (st->node->last) {
        st->node->last->next = n;
    } else {
        st->node->child = n;
    }

    st->node->last = n;

    return NGX_OK;
}


/* "<node>:<writer>:<seq>", node may hold anything but is not empty */
ngx_int_t
ngx_xmpp_mam_parse_id(ngx_str_t *id, ngx_xmpp_mam_pos_t *pos)
{
    u_char      *p, *last, *c1, *c2;
    ngx_int_t    n;

    if (id->len == 0 || id->len >= NGX_XMPP_MAM_ID_MAX) {
        return NGX_ERROR;
    }

    last = id->data + id->len;
    c2 = NULL;
    c1 = NULL;

    for (p = last - 1; p > id->data; p--) {
        if (*p == ':') {
            if (c2 == NULL) {
                c2 = p;
            } else {
                c1 = p;
                break;
            }
        }
    }

    if (c1 == NULL || c1 == id->data) {
        return NGX_ERROR;
    }

    n = ngx_atoi(c1 + 1, c2 - c1 - 1);
    if (n == NGX_ERROR) {
        return NGX_ERROR;
    }

    pos->writer = (uint64_t) n;

    n = ngx_atoi(c2 + 1, last - c2 - 1);
    if (n == NGX_ERROR || n == 0) {
        return NGX_ERROR;
    }

    pos->seq = (uint64_t) n;
    pos->node_len = c1 - id->data;
    ngx_memcpy(pos->node, id->data, pos->node_len);
    pos->set = 1;

    return NGX_OK;
}


/* days since 1970-01-01 of a proleptic Gregorian date */
static int64_t
ngx_xmpp_mam_days(int64_t y, int64_t m, int64_t d)
{
    int64_t  era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


static ngx_int_t
ngx_xmpp_mam_digits(u_char **p, u_char *last, ngx_uint_t n, int64_t *v)
{
    *v = 0;

    while (n--) {
        if (*p >= last || **p < '0' || **p > '9') {
            return NGX_ERROR;
        }

        *v = *v * 10 + (*(*p)++ - '0');
    }

    return NGX_OK;
}


/* XEP-0082 DateTime: CCYY-MM-DDThh:mm:ss[.sss]TZD -> microseconds */
ngx_int_t
ngx_xmpp_mam_parse_time(ngx_str_t *s, int64_t *us)
{
    u_char   *p, *last;
    int64_t   y, mo, d, h, mi, sec, frac, scale, oh, om, sign;

    p = s->data;
    last = p + s->len;

    if (ngx_xmpp_mam_digits(&p, last, 4, &y) != NGX_OK
        || p >= last || *p++ != '-'
        || ngx_xmpp_mam_digits(&p, last, 2, &mo) != NGX_OK
        || p >= last || *p++ != '-'
        || ngx_xmpp_mam_digits(&p, last, 2, &d) != NGX_OK
        || p >= last || *p++ != 'T'
        || ngx_xmpp_mam_digits(&p, last, 2, &h) != NGX_OK
        || p >= last || *p++ != ':'
        || ngx_xmpp_mam_digits(&p, last, 2, &mi) != NGX_OK
        || p >= last || *p++ != ':'
        || ngx_xmpp_mam_digits(&p, last, 2, &sec) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59
        || sec > 60)
    {
        return NGX_ERROR;
    }

    frac = 0;

    if (p < last && *p == '.') {
        p++;
        scale = 100000;

        if (p >= last || *p < '0' || *p > '9') {
            return NGX_ERROR;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            frac += (*p++ - '0') * scale;
            scale /= 10;
        }
    }

    oh = 0;
    om = 0;
    sign = 1;

    if (p < last && *p == 'Z') {
        p++;

    } else if (p < last && (*p == '+' || *p == '-')) {
        sign = (*p++ == '-') ? -1 : 1;

        if (ngx_xmpp_mam_digits(&p, last, 2, &oh) != NGX_OK
            || p >= last || *p++ != ':'
            || ngx_xmpp_mam_digits(&p, last, 2, &om) != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else {
        return NGX_ERROR;
    }

    if (p != last) {
        return NGX_ERROR;
    }

    *us = ((ngx_xmpp_mam_days(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec
            - sign * (oh * 3600 + om * 60)) * 1000000) + frac;

    return NGX_OK;
}


u_char *
ngx_xmpp_mam_stamp_time(u_char *p, int64_t us)
{
    ngx_tm_t  tm;

    ngx_gmtime((time_t) (us / 1000000), &tm);

    return ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02d.%06LZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       (int64_t) (us % 1000000));
}


/* the text of <name><value>..</value></name> fields of a data form */
static ngx_int_t
ngx_xmpp_mam_field(ngx_xmpp_session_t *s, ngx_xmpp_node_t *f,
    ngx_str_t *value)
{
    ngx_xmpp_node_t  *v;

    v = ngx_xmpp_node_child(f, "value", NGX_XMPP_NS_DATA);
    if (v == NULL) {
        value->len = 0;
        return NGX_OK;
    }

    return ngx_xmpp_node_text(s->stanza_pool, v, value);
}


/*
 * XEP-0313 section 4.1: the form's fields.  Returns the error
 * condition for the client, or NULL.
 */
static const char *
ngx_xmpp_mam_form(ngx_xmpp_session_t *s, ngx_xmpp_node_t *x,
    ngx_xmpp_mam_query_t *q, ngx_str_t *with)
{
    ngx_str_t        *var, v;
    ngx_xmpp_jid_t    jid;
    ngx_xmpp_node_t  *f;

    for (f = x->child; f; f = f->next) {
        if (f->name.len == 0) {
            continue;
        }

        var = ngx_xmpp_node_attr(f, "var");

        if (var == NULL || !ngx_xmpp_mam_is(&f->name, "field")) {
            return "bad-request";
        }

        if (ngx_xmpp_mam_field(s, f, &v) != NGX_OK) {
            return "internal-server-error";
        }

        if (ngx_xmpp_mam_is(var, "FORM_TYPE")) {
            if (!ngx_xmpp_mam_is(&v, NGX_XMPP_NS_MAM)) {
                return "bad-request";
            }

        } else if (ngx_xmpp_mam_is(var, "with")) {
            /* a resource is not kept apart: the bare JID is matched */
            if (ngx_xmpp_jid_parse(s->stanza_pool, &v, &jid) != NGX_OK) {
                return "jid-malformed";
            }

            *with = jid.bare;

        } else if (ngx_xmpp_mam_is(var, "start")) {
            if (ngx_xmpp_mam_parse_time(&v, &q->start) != NGX_OK) {
                return "bad-request";
            }

        } else if (ngx_xmpp_mam_is(var, "end")) {
            if (ngx_xmpp_mam_parse_time(&v, &q->end) != NGX_OK) {
                return "bad-request";
            }

        } else if (ngx_xmpp_mam_is(var, "after-id")) {
            if (ngx_xmpp_mam_parse_id(&v, &q->after) != NGX_OK) {
                return "item-not-found";
            }

        } else if (ngx_xmpp_mam_is(var, "before-id")) {
            if (ngx_xmpp_mam_parse_id(&v, &q->before) != NGX_OK) {
                return "item-not-found";
            }

        } else {
            /* XEP-0313 section 4.1.1: fields we do not know */
            return "feature-not-implemented";
        }
    }

    return NULL;
}


/* XEP-0059 section 2: <max/>, <after/>, <before/> */
static const char *
ngx_xmpp_mam_rsm(ngx_xmpp_session_t *s, ngx_xmpp_node_t *set,
    ngx_xmpp_mam_query_t *q)
{
    ngx_int_t         n;
    ngx_str_t         v;
    ngx_xmpp_node_t  *e;

    e = ngx_xmpp_node_child(set, "max", NGX_XMPP_NS_RSM);
    if (e) {
        if (ngx_xmpp_node_text(s->stanza_pool, e, &v) != NGX_OK) {
            return "internal-server-error";
        }

        n = ngx_atoi(v.data, v.len);
        if (n == NGX_ERROR) {
            return "bad-request";
        }

        if ((ngx_uint_t) n > s->conf->mam_max_page) {
            /* XEP-0313 section 4.3: more than the server allows */
            return "policy-violation";
        }

        q->max = n;
    }

    e = ngx_xmpp_node_child(set, "after", NGX_XMPP_NS_RSM);
    if (e) {
        if (ngx_xmpp_node_text(s->stanza_pool, e, &v) != NGX_OK) {
            return "internal-server-error";
        }

        if (ngx_xmpp_mam_parse_id(&v, &q->after) != NGX_OK) {
            return "item-not-found";
        }
    }

    e = ngx_xmpp_node_child(set, "before", NGX_XMPP_NS_RSM);
    if (e) {
        if (ngx_xmpp_node_text(s->stanza_pool, e, &v) != NGX_OK) {
            return "internal-server-error";
        }

        /* an empty <before/> asks for the last page (XEP-0059 2.5) */
        q->backward = 1;

        if (v.len && ngx_xmpp_mam_parse_id(&v, &q->before) != NGX_OK) {
            return "item-not-found";
        }
    }

    return NULL;
}


static void
ngx_xmpp_mam_error(ngx_xmpp_session_t *s, ngx_str_t *iq_id,
    const char *type, const char *condition)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(8192);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='error'"
                      " from='");
    ngx_xmpp_wbuf_escs(b, &s->jid.bare);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_escs(b, iq_id);
    ngx_xmpp_wbuf_lit(b, "'><error type='");
    ngx_xmpp_wbuf_str(b, type);
    ngx_xmpp_wbuf_lit(b, "'><");
    ngx_xmpp_wbuf_str(b, condition);
    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_STANZAS "'/></error></iq>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/* XEP-0313 section 4.1.1: the fields a client may use */
static void
ngx_xmpp_mam_fields(ngx_xmpp_session_t *s, ngx_str_t *iq_id)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(8192);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='result'"
                      " to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_escs(b, iq_id);
    ngx_xmpp_wbuf_lit(b, "'><query xmlns='" NGX_XMPP_NS_MAM "'>"
        "<x xmlns='" NGX_XMPP_NS_DATA "' type='form'>"
        "<field type='hidden' var='FORM_TYPE'><value>" NGX_XMPP_NS_MAM
        "</value></field>"
        "<field type='jid-single' var='with'/>"
        "<field type='text-single' var='start'/>"
        "<field type='text-single' var='end'/>"
        "<field type='text-single' var='after-id'/>"
        "<field type='text-single' var='before-id'/>"
        "</x></query></iq>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/*
 * XEP-0313 section 4: a query of the user's own archive.  An iq to
 * another account's bare JID asks for someone else's archive, which
 * only they may read: <forbidden/>.
 */
void
ngx_xmpp_mam_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    u_char                *p;
    size_t                 size;
    ngx_str_t             *qid, with;
    const char            *err;
    ngx_xmpp_node_t       *q, *x, *set;
    ngx_xmpp_db_req_t     *r;
    ngx_xmpp_mam_query_t   tmp, *mq;

    if (st->has_to
        && (st->to.bare.len != s->jid.bare.len
            || ngx_strncmp(st->to.bare.data, s->jid.bare.data,
                           s->jid.bare.len) != 0))
    {
        ngx_xmpp_router_error(s, st, "auth", "forbidden");
        return;
    }

    q = ngx_xmpp_node_first_element(st->node);

    if (ngx_xmpp_mam_is(&st->type, "get")) {
        ngx_xmpp_mam_fields(s, &st->id);
        return;
    }

    if (s->conf->audit_zone == NULL || s->conf->db_thread_pool == NULL) {
        ngx_xmpp_router_error(s, st, "cancel", "service-unavailable");
        return;
    }

    ngx_memzero(&tmp, sizeof(ngx_xmpp_mam_query_t));
    tmp.start = INT64_MIN;
    tmp.end = INT64_MAX;
    tmp.max = ngx_min(NGX_XMPP_MAM_DEFAULT_PAGE, s->conf->mam_max_page);
    with.len = 0;
    with.data = NULL;
    err = NULL;

    x = ngx_xmpp_node_child(q, "x", NGX_XMPP_NS_DATA);
    if (x) {
        err = ngx_xmpp_mam_form(s, x, &tmp, &with);
    }

    set = ngx_xmpp_node_child(q, "set", NGX_XMPP_NS_RSM);
    if (err == NULL && set) {
        err = ngx_xmpp_mam_rsm(s, set, &tmp);
    }

    qid = ngx_xmpp_node_attr(q, "queryid");

    if (err == NULL && qid && qid->len > NGX_XMPP_MAM_QID_MAX) {
        err = "bad-request";
    }

    if (err) {
        ngx_xmpp_router_error(s, st, ngx_strcmp(err, "policy-violation") == 0
                                     || ngx_strcmp(err, "feature-not-implemented")
                                        == 0 ? "cancel" : "modify",
                              err);
        return;
    }

    size = sizeof(ngx_xmpp_mam_query_t) + s->jid.bare.len + with.len
           + st->id.len + (qid ? qid->len : 0);

    r = ngx_xmpp_db_create(s->conf, size, s->connection->log);
    if (r == NULL) {
        ngx_xmpp_router_error(s, st, "wait", "resource-constraint");
        return;
    }

    mq = r->ctx;
    *mq = tmp;
    mq->sid = s->id;

    p = (u_char *) (mq + 1);
    mq->me.data = p;
    mq->me.len = s->jid.bare.len;
    p = ngx_cpymem(p, s->jid.bare.data, s->jid.bare.len);
    mq->with.data = NULL;
    mq->with.len = with.len;

    if (with.len) {
        mq->with.data = p;
        p = ngx_cpymem(p, with.data, with.len);
    }

    mq->iq_id.data = p;
    mq->iq_id.len = st->id.len;
    p = ngx_cpymem(p, st->id.data, st->id.len);
    mq->qid.data = p;
    mq->qid.len = qid ? qid->len : 0;

    if (qid) {
        ngx_memcpy(p, qid->data, qid->len);
    }

    r->run = ngx_xmpp_mam_run;
    r->done = ngx_xmpp_mam_done;
    r->cleanup = ngx_xmpp_mam_free;
    r->data = NULL;

    /* what was recorded before the query is in its answer */
    ngx_xmpp_audit_marks(s->conf, mq->marks);
    mq->since = ngx_current_msec;
    mq->wait.handler = ngx_xmpp_mam_wait;
    mq->wait.data = r;
    mq->wait.log = ngx_cycle->log;
    mq->wait.cancelable = 1;

    ngx_xmpp_mam_wait(&mq->wait);
}


/*
 * The shipper copies the journals into MariaDB every
 * conclave_audit_ship_interval; the query waits (polling the shared
 * figures every 5 ms, at most NGX_XMPP_MAM_SHIP_WAIT) until MariaDB has
 * every record journaled before the query arrived.  After that, or
 * while MariaDB is unreachable, it runs with what is there.
 */
static void
ngx_xmpp_mam_wait(ngx_event_t *ev)
{
    ngx_xmpp_db_req_t     *r;
    ngx_xmpp_session_t    *s;
    ngx_xmpp_mam_query_t  *mq;

    r = ev->data;
    mq = r->ctx;

    s = ngx_xmpp_session_find(mq->sid);
    if (s == NULL || !s->bound) {
        ngx_xmpp_db_destroy(r);
        return;
    }

    if (!ngx_xmpp_audit_shipped(s->conf, mq->marks)
        && ngx_current_msec - mq->since < NGX_XMPP_MAM_SHIP_WAIT)
    {
        ngx_add_timer(ev, 5);
        return;
    }

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_mam_error(s, &mq->iq_id, "wait", "resource-constraint");
        ngx_xmpp_db_destroy(r);
    }
}


/* pool thread: a position id -> its timestamp, in the user's archive */
static int
ngx_xmpp_mam_resolve_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_mam_pos_t  *pos;

    pos = r->data;

    if (n == 1 && cols[0].data) {
        pos->ts = strtoll((char *) cols[0].data, NULL, 10);
        pos->resolved = 1;
    }

    return 0;
}


static int
ngx_xmpp_mam_resolve(MYSQL *conn, ngx_xmpp_db_req_t *r,
    ngx_xmpp_mam_pos_t *pos)
{
    int                    rc;
    u_char                 w[NGX_INT64_LEN + 1], q[NGX_INT64_LEN + 1];
    ngx_str_t              params[5];
    MYSQL_STMT            *stmt;
    ngx_xmpp_mam_query_t  *mq;

    mq = r->ctx;

    params[0].data = pos->node;
    params[0].len = pos->node_len;
    params[1].data = w;
    params[1].len = ngx_sprintf(w, "%uL", pos->writer) - w;
    params[2].data = q;
    params[2].len = ngx_sprintf(q, "%uL", pos->seq) - q;
    params[3] = mq->me;
    params[4] = mq->me;

    stmt = ngx_xmpp_db_exec(conn, r,
               "SELECT ts_utc_us FROM audit_record WHERE node = ?"
               " AND writer_id = ? AND seq = ? AND event = 'message'"
               " AND (actor_user = ? OR peer = ?)", params, 5);
    if (stmt == NULL) {
        return -1;
    }

    r->data = pos;
    rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_mam_resolve_row);
    r->data = NULL;
    (void) mysql_stmt_close(stmt);

    return rc;
}


/* "AND <position condition>" for the page query */
u_char *
ngx_xmpp_mam_pos_sql(u_char *p, u_char *last, ngx_xmpp_mam_pos_t *pos,
    const char *op, ngx_str_t *params, ngx_uint_t *np)
{
    /* ts first so that the (user, ts) indexes bound the range */
    p = ngx_slprintf(p, last, " AND x.ts_utc_us %c= %L AND (x.ts_utc_us %c %L"
                     " OR (x.node, x.writer_id, x.seq) %c (?, %uL, %uL))",
                     op[0], pos->ts, op[0], pos->ts, op[0], pos->writer,
                     pos->seq);

    params[*np].data = pos->node;
    params[*np].len = pos->node_len;
    (*np)++;

    return p;
}


/*
 * One half of the page: what the user sent (own = 1) or received.
 * Each half is an index range scan in the order of (ts, primary key),
 * which InnoDB's secondary indexes hold, so neither needs a sort or a
 * temporary table; for each row two lookups on mam_ref find its latest
 * correction and its first retraction.
 */
static u_char *
ngx_xmpp_mam_branch_sql(u_char *p, u_char *last, ngx_xmpp_mam_query_t *mq,
    ngx_uint_t own, ngx_str_t *params, ngx_uint_t *np)
{
    const char  *dir;

    dir = mq->backward ? "DESC" : "ASC";

    /*
     * The indexes are named: left alone, MariaDB's estimates pick
     * (event, ts) for the page and (actor_user, ts) for the lookups,
     * which scan the whole archive (seconds at a million rows).
     */
    p = ngx_slprintf(p, last, "SELECT x.node, x.writer_id, x.seq,"
        " x.ts_utc_us, x.actor_user, x.peer, x.stanza_id, x.payload,"
        " (SELECT c.body FROM audit_record c"
        "  FORCE INDEX (audit_record_mam_ref)"
        "  WHERE c.mam_ref = CONCAT('c:', x.stanza_id)"
        "  AND c.actor_user = x.actor_user AND c.peer = x.peer"
        "  AND c.ts_utc_us >= x.ts_utc_us"
        "  ORDER BY c.ts_utc_us DESC, c.seq DESC LIMIT 1),"
        " (SELECT CONCAT_WS(' ', c.node, c.writer_id, c.seq, c.ts_utc_us,"
        "  JSON_VALUE(CONVERT(c.payload USING utf8mb4),"
        "  '$.params.retract_ns')) FROM audit_record c"
        "  FORCE INDEX (audit_record_mam_ref)"
        "  WHERE c.mam_ref = CONCAT('r:', x.stanza_id)"
        "  AND c.actor_user = x.actor_user AND c.peer = x.peer"
        "  AND c.ts_utc_us >= x.ts_utc_us"
        "  ORDER BY c.ts_utc_us, c.seq LIMIT 1)"
        " FROM audit_record x FORCE INDEX (%s) WHERE x.%s = ?",
        mq->with.len ? "audit_record_conversation"
                     : (own ? "audit_record_actor" : "audit_record_peer"),
        own ? "actor_user" : "peer");
    params[(*np)++] = mq->me;

    if (!own) {
        /* a message to oneself is in the first half already */
        p = ngx_slprintf(p, last, " AND x.actor_user <> ?");
        params[(*np)++] = mq->me;
    }

    if (mq->with.len) {
        p = ngx_slprintf(p, last, " AND x.%s = ?",
                         own ? "peer" : "actor_user");
        params[(*np)++] = mq->with;
    }

    p = ngx_slprintf(p, last, " AND x.event = 'message'"
                     " AND (x.msg_type IS NULL"
                     " OR x.msg_type IN ('chat', 'normal'))"
                     " AND (x.body IS NOT NULL OR x.mam_ref IS NOT NULL)");

    if (mq->start != INT64_MIN) {
        p = ngx_slprintf(p, last, " AND x.ts_utc_us >= %L", mq->start);
    }

    if (mq->end != INT64_MAX) {
        p = ngx_slprintf(p, last, " AND x.ts_utc_us <= %L", mq->end);
    }

    if (mq->after.set) {
        p = ngx_xmpp_mam_pos_sql(p, last, &mq->after, ">", params, np);
    }

    if (mq->before.set) {
        p = ngx_xmpp_mam_pos_sql(p, last, &mq->before, "<", params, np);
    }

    return ngx_slprintf(p, last, " ORDER BY x.ts_utc_us %s, x.node %s,"
                        " x.writer_id %s, x.seq %s LIMIT %ui",
                        dir, dir, dir, dir, mq->max + 1);
}


/*
 * Applies what happened to a message later: the body of its latest
 * correction replaces its own (XEP-0308 section 5), a retraction turns
 * it into a tombstone (XEP-0424 section "Tombstones").  stanza is our
 * own serialization, so <body> is written exactly so.
 */
char *
ngx_xmpp_mam_apply(ngx_xmpp_db_req_t *r, const char *stanza, size_t len,
    ngx_str_t *fix, ngx_str_t *retraction, size_t *out_len)
{
    u_char       *out, *p, *b, *e, *gt, *last;
    size_t        size;
    char          tid[NGX_XMPP_MAM_ID_MAX], ns[64];
    long long     ts, w, q;
    char          node[NGX_XMPP_MAM_ID_MAX];

    last = (u_char *) stanza + len;

    if (retraction->data) {
        /* "<node> <writer> <seq> <ts> <ns>" of the earliest retraction */
        if (sscanf((char *) retraction->data, "%95s %lld %lld %lld %63s",
                   node, &w, &q, &ts, ns) != 5)
        {
            goto plain;
        }

        gt = (u_char *) ngx_strlchr((u_char *) stanza, last, '>');
        if (gt == NULL || gt[-1] == '/') {
            goto plain;
        }

        ngx_snprintf((u_char *) tid, sizeof(tid), "%s:%L:%L%Z", node,
                     (int64_t) w, (int64_t) q);

        size = (gt + 1 - (u_char *) stanza) + 512 + sizeof("</message>");
        out = ngx_alloc(size, r->log);
        if (out == NULL) {
            return NULL;
        }

        p = ngx_cpymem(out, stanza, gt + 1 - (u_char *) stanza);
        p = ngx_sprintf(p, "<retracted xmlns='%s' id='%s' stamp='", ns, tid);
        p = ngx_xmpp_mam_stamp_time(p, (int64_t) ts);
        p = ngx_cpymem(p, "'/></message>", sizeof("'/></message>") - 1);
        *out_len = p - out;

        return (char *) out;
    }

    if (fix->data == NULL) {
        goto plain;
    }

    b = ngx_strlcasestrn((u_char *) stanza, last, (u_char *) "<body", 4);
    if (b == NULL || b + 5 >= last || (b[5] != '>' && b[5] != ' ')) {
        goto plain;
    }

    b = ngx_strlchr(b, last, '>');
    e = b ? ngx_strlcasestrn(b, last, (u_char *) "</body>", 6) : NULL;

    if (e == NULL || b[-1] == '/') {
        goto plain;
    }

    b++;

    /* the new body, escaped as the serializer would (6 bytes a char) */
    size = len + 6 * fix->len;
    out = ngx_alloc(size, r->log);
    if (out == NULL) {
        return NULL;
    }

    p = ngx_cpymem(out, stanza, b - (u_char *) stanza);
    p = (u_char *) ngx_escape_html(p, fix->data, fix->len);
    p = ngx_cpymem(p, e, last - e);
    *out_len = p - out;

    return (char *) out;

plain:

    out = ngx_alloc(len + 1, r->log);
    if (out == NULL) {
        return NULL;
    }

    ngx_memcpy(out, stanza, len);
    *out_len = len;

    return (char *) out;
}


/* pool thread: one row of the page -> the message the user sees */
static int
ngx_xmpp_mam_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    json_t                *rec, *stanza;
    json_error_t           jerr;
    ngx_xmpp_mam_row_t    *row;
    ngx_xmpp_mam_query_t  *mq;

    mq = r->ctx;

    if (n != 10 || mq->nrows == mq->cap || cols[7].data == NULL) {
        return 0;
    }

    rec = json_loadb((char *) cols[7].data, cols[7].len, 0, &jerr);
    stanza = rec ? json_object_get(json_object_get(rec, "params"), "stanza")
                 : NULL;

    if (!json_is_string(stanza)) {
        /* not a message we wrote: skipped, the payload stays evidence */
        json_decref(rec);
        return 0;
    }

    row = &mq->rows[mq->nrows];

    row->xml = ngx_xmpp_mam_apply(r, json_string_value(stanza),
                                  json_string_length(stanza), &cols[8],
                                  &cols[9], &row->len);
    json_decref(rec);

    if (row->xml == NULL) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "out of memory",
                    sizeof(r->err));
        return -1;
    }

    row->ts = strtoll((char *) cols[3].data, NULL, 10);
    row->writer = strtoull((char *) cols[1].data, NULL, 10);
    row->seq = strtoull((char *) cols[2].data, NULL, 10);
    ngx_snprintf((u_char *) row->node, sizeof(row->node), "%V%Z", &cols[0]);
    ngx_snprintf((u_char *) row->id, sizeof(row->id), "%V:%V:%V%Z",
                 &cols[0], &cols[1], &cols[2]);
    mq->nrows++;

    return 0;
}


/*
 * Pool thread.  The page is the union of two index range scans,
 * (actor_user, ts) for what the user sent and (peer, ts) for what they
 * received (or (actor_user, peer, ts) for both with "with"), each
 * limited to max + 1 rows; the extra row tells whether the page is the
 * last one (<fin complete='true'/>).  For each row, two index lookups
 * on mam_ref find its latest correction and first retraction.
 */
static int
ngx_xmpp_mam_run(MYSQL *conn, ngx_xmpp_db_req_t *r)
{
    int                    rc;
    u_char                *p, sql[4096];
    ngx_str_t              params[NGX_XMPP_DB_PARAMS_MAX];
    ngx_uint_t             np, own, half;
    MYSQL_STMT            *stmt;
    ngx_xmpp_mam_query_t  *mq;

    mq = r->ctx;

    if ((mq->after.set
         && (ngx_xmpp_mam_resolve(conn, r, &mq->after) != 0
             || !mq->after.resolved))
        || (mq->before.set
            && (ngx_xmpp_mam_resolve(conn, r, &mq->before) != 0
                || !mq->before.resolved)))
    {
        if (r->err[0]) {
            return -1;
        }

        mq->not_found = 1;
        return 0;
    }

    half = 0;
    mq->cap = 2 * (mq->max + 1);
    mq->rows = ngx_calloc(mq->cap * sizeof(ngx_xmpp_mam_row_t), r->log);
    if (mq->rows == NULL) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "out of memory",
                    sizeof(r->err));
        return -1;
    }

    for (own = 1; own != (ngx_uint_t) -1; own--) {
        np = 0;
        p = ngx_xmpp_mam_branch_sql(sql, sql + sizeof(sql) - 1, mq, own,
                                    params, &np);

        if (p == sql + sizeof(sql) - 1) {
            ngx_cpystrn((u_char *) r->err, (u_char *) "query too long",
                        sizeof(r->err));
            return -1;
        }

        *p = '\0';

        stmt = ngx_xmpp_db_exec(conn, r, (char *) sql, params, np);
        if (stmt == NULL) {
            return -1;
        }

        rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_mam_row);
        (void) mysql_stmt_close(stmt);

        if (rc != 0) {
            return -1;
        }

        if (own) {
            half = mq->nrows;
        }
    }

    return ngx_xmpp_mam_merge(r, mq, half);
}


/* (ts, node, writer, seq) order of two rows */
static int
ngx_xmpp_mam_cmp(ngx_xmpp_mam_row_t *a, ngx_xmpp_mam_row_t *b)
{
    int  rc;

    if (a->ts != b->ts) {
        return a->ts < b->ts ? -1 : 1;
    }

    rc = ngx_strcmp(a->node, b->node);
    if (rc) {
        return rc;
    }

    if (a->writer != b->writer) {
        return a->writer < b->writer ? -1 : 1;
    }

    return a->seq < b->seq ? -1 : (a->seq > b->seq);
}


/*
 * The two halves, each in page order, merged; the first max rows are
 * the page, and one more row says it is not the last (<fin
 * complete='true'/> otherwise).  Rows past the page are freed here.
 */
static int
ngx_xmpp_mam_merge(ngx_xmpp_db_req_t *r, ngx_xmpp_mam_query_t *mq,
    ngx_uint_t half)
{
    int                  c;
    ngx_uint_t           i, j, k, n;
    ngx_xmpp_mam_row_t  *out;

    n = mq->nrows;

    out = ngx_alloc(mq->cap * sizeof(ngx_xmpp_mam_row_t), r->log);
    if (out == NULL) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "out of memory",
                    sizeof(r->err));
        return -1;
    }

    i = 0;
    j = half;

    for (k = 0; k < n; k++) {
        if (i < half && j < n) {
            c = ngx_xmpp_mam_cmp(&mq->rows[i], &mq->rows[j]);
            c = mq->backward ? -c : c;

        } else {
            c = (i < half) ? -1 : 1;
        }

        out[k] = (c <= 0) ? mq->rows[i++] : mq->rows[j++];
    }

    for (k = n; k < mq->cap; k++) {
        out[k].xml = NULL;
    }

    ngx_free(mq->rows);
    mq->rows = out;

    mq->complete = (n <= mq->max);

    for (k = mq->max; k < n; k++) {
        ngx_free(mq->rows[k].xml);
        mq->rows[k].xml = NULL;
    }

    if (n > mq->max) {
        mq->nrows = mq->max;
    }

    return 0;
}


static void
ngx_xmpp_mam_send_row(ngx_xmpp_session_t *s, ngx_xmpp_mam_query_t *mq,
    ngx_xmpp_mam_row_t *row)
{
    u_char            stamp[64], *p;
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(row->len + 4096 + mq->qid.len * 6);

    /* XEP-0313 section 4.2: from the archive, the user's bare JID */
    ngx_xmpp_wbuf_lit(b, "<message xmlns='" NGX_XMPP_NS_CLIENT "' from='");
    ngx_xmpp_wbuf_escs(b, &s->jid.bare);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "'><result xmlns='" NGX_XMPP_NS_MAM "'");

    if (mq->qid.len) {
        ngx_xmpp_wbuf_lit(b, " queryid='");
        ngx_xmpp_wbuf_escs(b, &mq->qid);
        ngx_xmpp_wbuf_lit(b, "'");
    }

    ngx_xmpp_wbuf_lit(b, " id='");
    ngx_xmpp_wbuf_esc(b, (u_char *) row->id, ngx_strlen(row->id));
    ngx_xmpp_wbuf_lit(b, "'><forwarded xmlns='" NGX_XMPP_NS_FORWARD "'>"
                      "<delay xmlns='" NGX_XMPP_NS_DELAY "' stamp='");
    p = ngx_xmpp_mam_stamp_time(stamp, row->ts);
    ngx_xmpp_wbuf_add(b, stamp, p - stamp);
    ngx_xmpp_wbuf_lit(b, "'/>");
    ngx_xmpp_wbuf_add(b, row->xml, row->len);
    ngx_xmpp_wbuf_lit(b, "</forwarded></result></message>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/* event loop: the results, then <fin/> (XEP-0313 section 4.3) */
static void
ngx_xmpp_mam_done(ngx_xmpp_db_req_t *r)
{
    ngx_int_t              i, from, to, step;
    ngx_xmpp_wbuf_t       *b;
    ngx_xmpp_session_t    *s;
    ngx_xmpp_mam_row_t    *first, *last;
    ngx_xmpp_mam_query_t  *mq;

    mq = r->ctx;

    s = ngx_xmpp_session_find(mq->sid);
    if (s == NULL || !s->bound || s->state != NGX_XMPP_ST_SESSION) {
        return;
    }

    if (r->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: archive query failed (%ui): %s", r->rc,
                      r->err);
        ngx_xmpp_mam_error(s, &mq->iq_id, "wait", "internal-server-error");
        return;
    }

    if (mq->not_found) {
        /* XEP-0313 section 4.3.1 / XEP-0059 2.6: an unknown id */
        ngx_xmpp_mam_error(s, &mq->iq_id, "cancel", "item-not-found");
        return;
    }

    /* a backward page was read newest first: send it in time order */
    from = mq->backward ? (ngx_int_t) mq->nrows - 1 : 0;
    to = mq->backward ? -1 : (ngx_int_t) mq->nrows;
    step = mq->backward ? -1 : 1;

    for (i = from; i != to; i += step) {
        ngx_xmpp_mam_send_row(s, mq, &mq->rows[i]);
    }

    b = ngx_xmpp_wbuf_scratch(8192);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='result'"
                      " from='");
    ngx_xmpp_wbuf_escs(b, &s->jid.bare);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_escs(b, &mq->iq_id);
    ngx_xmpp_wbuf_lit(b, "'><fin xmlns='" NGX_XMPP_NS_MAM "'");

    if (mq->complete) {
        ngx_xmpp_wbuf_lit(b, " complete='true'");
    }

    ngx_xmpp_wbuf_lit(b, "><set xmlns='" NGX_XMPP_NS_RSM "'>");

    if (mq->nrows) {
        first = &mq->rows[mq->backward ? mq->nrows - 1 : 0];
        last = &mq->rows[mq->backward ? 0 : mq->nrows - 1];

        ngx_xmpp_wbuf_lit(b, "<first>");
        ngx_xmpp_wbuf_esc(b, (u_char *) first->id, ngx_strlen(first->id));
        ngx_xmpp_wbuf_lit(b, "</first><last>");
        ngx_xmpp_wbuf_esc(b, (u_char *) last->id, ngx_strlen(last->id));
        ngx_xmpp_wbuf_lit(b, "</last>");

    } else {
        ngx_xmpp_wbuf_lit(b, "<count>0</count>");
    }

    ngx_xmpp_wbuf_lit(b, "</set></fin></iq>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


static void
ngx_xmpp_mam_free(ngx_xmpp_db_req_t *r)
{
    ngx_uint_t             i;
    ngx_xmpp_mam_query_t  *mq;

    mq = r->ctx;

    if (mq->rows == NULL) {
        return;
    }

    for (i = 0; i < mq->cap; i++) {
        ngx_free(mq->rows[i].xml);
    }

    ngx_free(mq->rows);
    mq->rows = NULL;
}
