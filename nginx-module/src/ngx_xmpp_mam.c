
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
 * The query runs in the database thread pool (ngx_xmpp_db.c): its
 * code, shared with a room's archive, is ngx_xmpp_mam_query.c.
 */


#include "ngx_xmpp.h"

#include <jansson.h>


#define NGX_XMPP_NS_MAM_EXT    "urn:xmpp:mam:2#extended"
#define NGX_XMPP_NS_RSM        "http://jabber.org/protocol/rsm"
#define NGX_XMPP_NS_DATA       "jabber:x:data"
#define NGX_XMPP_NS_SID        "urn:xmpp:sid:0"
#define NGX_XMPP_NS_CORRECT    "urn:xmpp:message-correct:0"
#define NGX_XMPP_NS_RETRACT0   "urn:xmpp:message-retract:0"
#define NGX_XMPP_NS_RETRACT1   "urn:xmpp:message-retract:1"
#define NGX_XMPP_NS_FASTEN     "urn:xmpp:fasten:0"

#define NGX_XMPP_MAM_DEFAULT_PAGE  50
#define NGX_XMPP_MAM_QID_MAX       256


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


/* what a query is before the form and RSM: the whole archive, a page */
void
ngx_xmpp_mam_defaults(ngx_xmpp_mam_query_t *q, ngx_xmpp_conf_t *xcf)
{
    q->xcf = xcf;
    q->start = INT64_MIN;
    q->end = INT64_MAX;
    q->max = ngx_min(NGX_XMPP_MAM_DEFAULT_PAGE, xcf->mam_max_page);
}


/*
 * XEP-0313 section 4.1: one field of the query's form, var = v.  A
 * room's archive reads its own "with" (ngx_xmpp_mamroom_with()) before
 * it calls this.  Returns the error condition for the client, or NULL.
 */
const char *
ngx_xmpp_mam_field(ngx_xmpp_mam_query_t *q, ngx_pool_t *pool,
    ngx_str_t *var, ngx_str_t *v)
{
    ngx_xmpp_jid_t  jid;

    if (ngx_xmpp_mam_is(var, "FORM_TYPE")) {
        return ngx_xmpp_mam_is(v, NGX_XMPP_NS_MAM) ? NULL : "bad-request";
    }

    if (ngx_xmpp_mam_is(var, "with") && q->kind == NGX_XMPP_MAM_USER) {
        if (ngx_xmpp_jid_parse(pool, v, &jid) != NGX_OK) {
            return "jid-malformed";
        }

        if (jid.resource.len == 0) {
            q->with = jid.bare;
            return NULL;
        }

        /*
         * XEP-0313 4.1.1: a full JID, only what was exchanged with that
         * resource; jid.full begins with jid.bare (ngx_xmpp_jid_make())
         */
        q->with = jid.full;
        q->with_bare = jid.bare.len;

        return NULL;
    }

    if (ngx_xmpp_mam_is(var, "start")) {
        return ngx_xmpp_mam_parse_time(v, &q->start) == NGX_OK
               ? NULL : "bad-request";
    }

    if (ngx_xmpp_mam_is(var, "end")) {
        return ngx_xmpp_mam_parse_time(v, &q->end) == NGX_OK
               ? NULL : "bad-request";
    }

    if (ngx_xmpp_mam_is(var, "after-id")) {
        return ngx_xmpp_mam_parse_id(v, &q->after) == NGX_OK
               ? NULL : "item-not-found";
    }

    if (ngx_xmpp_mam_is(var, "before-id")) {
        return ngx_xmpp_mam_parse_id(v, &q->before) == NGX_OK
               ? NULL : "item-not-found";
    }

    /* XEP-0313 section 4.1.1: fields we do not know */
    return "feature-not-implemented";
}


/* XEP-0059 section 2: the text v of <max/>, <after/> or <before/> */
const char *
ngx_xmpp_mam_rsm_value(ngx_xmpp_mam_query_t *q, const char *name,
    ngx_str_t *v)
{
    ngx_int_t  n;

    if (name[0] == 'm') {
        n = ngx_atoi(v->data, v->len);
        if (n == NGX_ERROR) {
            return "bad-request";
        }

        if ((ngx_uint_t) n > q->xcf->mam_max_page) {
            /* XEP-0313 section 4.3: more than the server allows */
            return "policy-violation";
        }

        q->max = n;
        return NULL;
    }

    if (name[0] == 'a') {
        return ngx_xmpp_mam_parse_id(v, &q->after) == NGX_OK
               ? NULL : "item-not-found";
    }

    /* an empty <before/> asks for the last page (XEP-0059 2.5) */
    q->backward = 1;

    return v->len == 0 || ngx_xmpp_mam_parse_id(v, &q->before) == NGX_OK
           ? NULL : "item-not-found";
}


/* the error type of a condition the parse returned (RFC 6120 8.3.2) */
const char *
ngx_xmpp_mam_error_type(const char *condition)
{
    if (ngx_strcmp(condition, "forbidden") == 0) {
        return "auth";
    }

    return ngx_strcmp(condition, "policy-violation") == 0
           || ngx_strcmp(condition, "feature-not-implemented") == 0
           ? "cancel" : "modify";
}


/* the user's form: each <field var><value/></field> as a string */
static const char *
ngx_xmpp_mam_form(ngx_xmpp_session_t *s, ngx_xmpp_node_t *x,
    ngx_xmpp_mam_query_t *q)
{
    ngx_str_t        *var, v;
    const char       *err;
    ngx_xmpp_node_t  *f, *e;

    for (f = x->child; f; f = f->next) {
        if (f->name.len == 0) {
            continue;
        }

        var = ngx_xmpp_node_attr(f, "var");

        if (var == NULL || !ngx_xmpp_mam_is(&f->name, "field")) {
            return "bad-request";
        }

        v.len = 0;
        e = ngx_xmpp_node_child(f, "value", NGX_XMPP_NS_DATA);

        if (e && ngx_xmpp_node_text(s->stanza_pool, e, &v) != NGX_OK) {
            return "internal-server-error";
        }

        err = ngx_xmpp_mam_field(q, s->stanza_pool, var, &v);
        if (err) {
            return err;
        }
    }

    return NULL;
}


/* the user's <set/>: the text of each RSM element present */
static const char *
ngx_xmpp_mam_rsm(ngx_xmpp_session_t *s, ngx_xmpp_node_t *set,
    ngx_xmpp_mam_query_t *q)
{
    ngx_str_t         v;
    ngx_uint_t        i;
    const char       *err;
    ngx_xmpp_node_t  *e;

    static const char  *names[] = { "max", "after", "before" };

    for (i = 0; i < 3; i++) {
        e = ngx_xmpp_node_child(set, names[i], NGX_XMPP_NS_RSM);
        if (e == NULL) {
            continue;
        }

        if (ngx_xmpp_node_text(s->stanza_pool, e, &v) != NGX_OK) {
            return "internal-server-error";
        }

        err = ngx_xmpp_mam_rsm_value(q, names[i], &v);
        if (err) {
            return err;
        }
    }

    return NULL;
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
    ngx_str_t             *qid, none;
    const char            *err;
    ngx_xmpp_node_t       *q, *x, *set;
    ngx_xmpp_db_req_t     *r;
    ngx_xmpp_mam_query_t   tmp;

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
    tmp.kind = NGX_XMPP_MAM_USER;
    ngx_xmpp_mam_defaults(&tmp, s->conf);
    err = NULL;

    x = ngx_xmpp_node_child(q, "x", NGX_XMPP_NS_DATA);
    if (x) {
        err = ngx_xmpp_mam_form(s, x, &tmp);
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
        ngx_xmpp_router_error(s, st, ngx_xmpp_mam_error_type(err), err);
        return;
    }

    ngx_str_null(&none);
    tmp.pid = ngx_pid;
    tmp.sid = s->id;

    r = ngx_xmpp_mam_request(&tmp, &s->jid.bare, &s->jid.full, &st->id,
                             qid ? qid : &none, ngx_cycle->log);
    if (r == NULL) {
        ngx_xmpp_router_error(s, st, "wait", "resource-constraint");
        return;
    }

    ngx_xmpp_mam_query(r);
}
