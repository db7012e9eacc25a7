
/*
 * XEP-0115 entity capabilities of the clients, for XEP-0163 filtered
 * notifications (section 4.3.1: a contact gets a node's events when its
 * caps list "<node>+notify").
 *
 * A presence with <c hash='sha-1' node=... ver=.../> names the client's
 * disco#info by its hash.  Each worker keeps a bounded cache of ver ->
 * +notify nodes; on a miss the server asks the client (disco#info with
 * node "node#ver", section 6.2), checks the hash of the answer (section
 * 5.4) and caches it only when it matches.  An answer that does not
 * match still describes that session, so the session uses it, but no
 * other session will.  A session keeps its own copy of its interests:
 * an entry pushed out of the cache changes nothing for it.
 */


#include "ngx_xmpp.h"

#include <openssl/evp.h>


#define NGX_XMPP_NS_CAPS        "http://jabber.org/protocol/caps"
#define NGX_XMPP_CAPS_CACHE     512
#define NGX_XMPP_CAPS_VER_MAX   64
#define NGX_XMPP_CAPS_NOTIFY_MAX  4096
#define NGX_XMPP_CAPS_ITEMS_MAX   1024


typedef struct {
    u_char                 ver[NGX_XMPP_CAPS_VER_MAX];
    size_t                 ver_len;
    u_char                *notify;        /* heap: u16 len, node name */
    size_t                 notify_len;
} ngx_xmpp_caps_entry_t;


typedef struct {
    ngx_str_t              category;
    ngx_str_t              type;
    ngx_str_t              lang;
    ngx_str_t              name;
} ngx_xmpp_caps_ident_t;


typedef struct {
    ngx_str_t              form_type;
    ngx_str_t              text;          /* its part of the string */
} ngx_xmpp_caps_form_t;


/* the session's state, in its pool */
typedef struct {
    u_char                *notify;        /* heap, as in the cache */
    size_t                 notify_len;
    u_char                 ver[NGX_XMPP_CAPS_VER_MAX];
    size_t                 ver_len;       /* of notify */
    u_char                 pending[NGX_XMPP_CAPS_VER_MAX];
    size_t                 pending_len;   /* the ver asked about */
    u_char                 qid[32];
    size_t                 qid_len;       /* 0: no query out */
    unsigned               sha1:1;        /* the pending ver is sha-1 */
} ngx_xmpp_caps_sess_t;


static ngx_xmpp_caps_entry_t  ngx_xmpp_caps_cache[NGX_XMPP_CAPS_CACHE];
static ngx_uint_t             ngx_xmpp_caps_next;


static ngx_inline ngx_uint_t
ngx_xmpp_caps_is(ngx_str_t *s, const char *lit)
{
    size_t  len;

    len = ngx_strlen(lit);

    return s->len == len && ngx_strncmp(s->data, lit, len) == 0;
}


static ngx_int_t
ngx_xmpp_caps_cmp(ngx_str_t *a, ngx_str_t *b)
{
    if (a->len == 0 || b->len == 0) {
        /* an absent xml:lang or name has no data pointer */
        return (ngx_int_t) a->len - (ngx_int_t) b->len;
    }

    return ngx_memn2cmp(a->data, b->data, a->len, b->len);
}


/* section 5.1 step 2: by category, then type, then xml:lang */
static ngx_int_t
ngx_xmpp_caps_ident_cmp(const void *one, const void *two)
{
    ngx_int_t               rc;
    ngx_xmpp_caps_ident_t  *a = (ngx_xmpp_caps_ident_t *) one;
    ngx_xmpp_caps_ident_t  *b = (ngx_xmpp_caps_ident_t *) two;

    rc = ngx_xmpp_caps_cmp(&a->category, &b->category);
    if (rc == 0) {
        rc = ngx_xmpp_caps_cmp(&a->type, &b->type);
    }

    if (rc == 0) {
        rc = ngx_xmpp_caps_cmp(&a->lang, &b->lang);
    }

    if (rc == 0) {
        rc = ngx_xmpp_caps_cmp(&a->name, &b->name);
    }

    return rc;
}


static ngx_int_t
ngx_xmpp_caps_str_cmp(const void *one, const void *two)
{
    return ngx_xmpp_caps_cmp((ngx_str_t *) one, (ngx_str_t *) two);
}


static ngx_int_t
ngx_xmpp_caps_form_cmp(const void *one, const void *two)
{
    return ngx_xmpp_caps_cmp(&((ngx_xmpp_caps_form_t *) one)->form_type,
                             &((ngx_xmpp_caps_form_t *) two)->form_type);
}


static void
ngx_xmpp_caps_add(ngx_xmpp_wbuf_t *b, ngx_str_t *s)
{
    ngx_xmpp_wbuf_nstr(b, s);
    ngx_xmpp_wbuf_lit(b, "<");
}


/*
 * Section 5.1: the verification string S and its SHA-1 in base64.
 * The arrays are sorted in place.  NGX_DECLINED: duplicates (5.4 3.3).
 */
static ngx_int_t
ngx_xmpp_caps_hash(ngx_xmpp_caps_ident_t *ids, ngx_uint_t nids,
    ngx_str_t *features, ngx_uint_t nf, ngx_xmpp_caps_form_t *forms,
    ngx_uint_t nforms, ngx_str_t *ver)
{
    ngx_uint_t       i;
    ngx_str_t        md_str;
    unsigned int     md_len;
    u_char           md[EVP_MAX_MD_SIZE];
    ngx_xmpp_wbuf_t  b;

    if (nids > 1) {
        ngx_sort(ids, nids, sizeof(ngx_xmpp_caps_ident_t),
                 ngx_xmpp_caps_ident_cmp);
    }

    if (nf > 1) {
        ngx_sort(features, nf, sizeof(ngx_str_t), ngx_xmpp_caps_str_cmp);
    }

    if (nforms > 1) {
        ngx_sort(forms, nforms, sizeof(ngx_xmpp_caps_form_t),
                 ngx_xmpp_caps_form_cmp);
    }

    for (i = 1; i < nids; i++) {
        if (ngx_xmpp_caps_ident_cmp(&ids[i - 1], &ids[i]) == 0) {
            return NGX_DECLINED;
        }
    }

    for (i = 1; i < nf; i++) {
        if (ngx_xmpp_caps_cmp(&features[i - 1], &features[i]) == 0) {
            return NGX_DECLINED;
        }
    }

    for (i = 1; i < nforms; i++) {
        if (ngx_xmpp_caps_form_cmp(&forms[i - 1], &forms[i]) == 0) {
            return NGX_DECLINED;
        }
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 256 * 1024;

    for (i = 0; i < nids; i++) {
        ngx_xmpp_wbuf_nstr(&b, &ids[i].category);
        ngx_xmpp_wbuf_lit(&b, "/");
        ngx_xmpp_wbuf_nstr(&b, &ids[i].type);
        ngx_xmpp_wbuf_lit(&b, "/");
        ngx_xmpp_wbuf_nstr(&b, &ids[i].lang);
        ngx_xmpp_wbuf_lit(&b, "/");
        ngx_xmpp_caps_add(&b, &ids[i].name);
    }

    for (i = 0; i < nf; i++) {
        ngx_xmpp_caps_add(&b, &features[i]);
    }

    for (i = 0; i < nforms; i++) {
        ngx_xmpp_wbuf_nstr(&b, &forms[i].text);
    }

    if (b.failed
        || EVP_Digest(b.start, b.last - b.start, md, &md_len, EVP_sha1(),
                      NULL) != 1)
    {
        ngx_xmpp_wbuf_free(&b);
        return NGX_ERROR;
    }

    ngx_xmpp_wbuf_free(&b);

    md_str.data = md;
    md_str.len = md_len;
    ngx_encode_base64(ver, &md_str);

    return NGX_OK;
}


/* section 5.1 step 6: one form's part of S, "" when it has no FORM_TYPE */
static ngx_int_t
ngx_xmpp_caps_form(ngx_pool_t *pool, ngx_xmpp_node_t *x,
    ngx_xmpp_caps_form_t *form)
{
    ngx_str_t        *var, *vars, *vals, v, *p;
    ngx_uint_t        nvars, nvals, i, j, n;
    ngx_xmpp_wbuf_t   b;
    ngx_xmpp_node_t  *f, *c;

    n = ngx_xmpp_node_nchildren(x) + 1;

    vars = ngx_pcalloc(pool, n * 2 * sizeof(ngx_str_t));
    if (vars == NULL) {
        return NGX_ERROR;
    }

    nvars = 0;
    ngx_str_null(&form->form_type);

    /* each var's string: "var<" then its sorted "value<" */
    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 64 * 1024;

    for (f = x->child; f; f = f->next) {
        if (!ngx_xmpp_caps_is(&f->name, "field")) {
            continue;
        }

        var = ngx_xmpp_node_attr(f, "var");
        if (var == NULL) {
            continue;
        }

        nvals = 0;
        vals = &vars[n];

        for (c = f->child; c && nvals < n; c = c->next) {
            if (ngx_xmpp_caps_is(&c->name, "value")) {
                if (ngx_xmpp_node_text(pool, c, &v) != NGX_OK) {
                    return NGX_ERROR;
                }

                vals[nvals++] = v;
            }
        }

        if (ngx_xmpp_caps_is(var, "FORM_TYPE")) {
            if (nvals != 1 || form->form_type.len) {
                return NGX_DECLINED;    /* 5.4 3.5, 3.6 */
            }

            form->form_type = vals[0];
            continue;
        }

        if (nvals > 1) {
            ngx_sort(vals, nvals, sizeof(ngx_str_t), ngx_xmpp_caps_str_cmp);
        }

        b.last = b.start;
        ngx_xmpp_caps_add(&b, var);

        for (j = 0; j < nvals; j++) {
            ngx_xmpp_caps_add(&b, &vals[j]);
        }

        if (b.failed) {
            ngx_xmpp_wbuf_free(&b);
            return NGX_DECLINED;
        }

        p = &vars[nvars++];
        p->len = b.last - b.start;
        p->data = ngx_pnalloc(pool, p->len);
        if (p->data == NULL) {
            ngx_xmpp_wbuf_free(&b);
            return NGX_ERROR;
        }

        ngx_memcpy(p->data, b.start, p->len);
    }

    ngx_xmpp_wbuf_free(&b);

    /* "var<" sorts the fields by var: '<' is below every name byte */
    if (nvars > 1) {
        ngx_sort(vars, nvars, sizeof(ngx_str_t), ngx_xmpp_caps_str_cmp);
    }

    ngx_str_null(&form->text);

    if (form->form_type.len == 0) {
        return NGX_OK;
    }

    n = form->form_type.len + 1;

    for (i = 0; i < nvars; i++) {
        n += vars[i].len;
    }

    form->text.data = ngx_pnalloc(pool, n);
    if (form->text.data == NULL) {
        return NGX_ERROR;
    }

    v.data = ngx_cpymem(form->text.data, form->form_type.data,
                        form->form_type.len);
    *v.data++ = '<';

    for (i = 0; i < nvars; i++) {
        v.data = ngx_cpymem(v.data, vars[i].data, vars[i].len);
    }

    form->text.len = n;

    return NGX_OK;
}


/* the identity's xml:lang (ngx_xmpp_node_attr() sees no prefixed ones) */
static ngx_str_t *
ngx_xmpp_caps_lang(ngx_xmpp_node_t *n)
{
    ngx_uint_t  i;

    for (i = 0; i < n->nattrs; i++) {
        if (ngx_xmpp_caps_is(&n->attrs[i].name, "lang")
            && ngx_xmpp_caps_is(&n->attrs[i].ns, NGX_XMPP_NS_XML))
        {
            return &n->attrs[i].value;
        }
    }

    return NULL;
}


/*
 * The ver of a disco#info <query/> (XEP-0115 5.1), into ver (at least
 * 29 bytes).  NGX_DECLINED: a query 5.4 says not to trust.
 */
ngx_int_t
ngx_xmpp_caps_ver(ngx_pool_t *pool, ngx_xmpp_node_t *q, ngx_str_t *ver)
{
    ngx_int_t               rc;
    ngx_str_t              *feat, *v;
    ngx_uint_t              n, nids, nf, nforms;
    ngx_xmpp_node_t        *c;
    ngx_xmpp_caps_form_t   *forms;
    ngx_xmpp_caps_ident_t  *ids;

    n = ngx_xmpp_node_nchildren(q);

    if (n > NGX_XMPP_CAPS_ITEMS_MAX) {
        return NGX_DECLINED;
    }

    ids = ngx_pcalloc(pool, (n + 1) * sizeof(ngx_xmpp_caps_ident_t));
    feat = ngx_pcalloc(pool, (n + 1) * sizeof(ngx_str_t));
    forms = ngx_pcalloc(pool, (n + 1) * sizeof(ngx_xmpp_caps_form_t));

    if (ids == NULL || feat == NULL || forms == NULL) {
        return NGX_ERROR;
    }

    nids = 0;
    nf = 0;
    nforms = 0;

    for (c = q->child; c; c = c->next) {
        if (ngx_xmpp_caps_is(&c->name, "identity")) {
            v = ngx_xmpp_node_attr(c, "category");
            if (v == NULL) {
                return NGX_DECLINED;
            }

            ids[nids].category = *v;
            v = ngx_xmpp_node_attr(c, "type");
            if (v == NULL) {
                return NGX_DECLINED;
            }

            ids[nids].type = *v;
            v = ngx_xmpp_caps_lang(c);
            if (v) {
                ids[nids].lang = *v;
            }

            v = ngx_xmpp_node_attr(c, "name");
            if (v) {
                ids[nids].name = *v;
            }

            nids++;

        } else if (ngx_xmpp_caps_is(&c->name, "feature")) {
            v = ngx_xmpp_node_attr(c, "var");
            if (v == NULL) {
                return NGX_DECLINED;
            }

            feat[nf++] = *v;

        } else if (ngx_xmpp_caps_is(&c->name, "x")
                   && ngx_xmpp_caps_is(&c->ns, "jabber:x:data"))
        {
            rc = ngx_xmpp_caps_form(pool, c, &forms[nforms]);
            if (rc != NGX_OK) {
                return rc;
            }

            if (forms[nforms].form_type.len) {
                nforms++;
            }
        }
    }

    ver->data = ngx_pnalloc(pool, ngx_base64_encoded_length(
                                                      EVP_MAX_MD_SIZE));
    if (ver->data == NULL) {
        return NGX_ERROR;
    }

    return ngx_xmpp_caps_hash(ids, nids, feat, nf, forms, nforms, ver);
}


/* the "<node>+notify" features of a disco#info, as u16 len + name */
static ngx_int_t
ngx_xmpp_caps_notify_list(ngx_xmpp_node_t *q, u_char **out, size_t *len)
{
    u_char           *p, *last;
    size_t            size;
    uint16_t          l;
    ngx_str_t        *v;
    ngx_xmpp_node_t  *c;

    static const char  suffix[] = "+notify";

    p = ngx_alloc(NGX_XMPP_CAPS_NOTIFY_MAX, ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = p;

    for (c = q->child; c; c = c->next) {
        if (!ngx_xmpp_caps_is(&c->name, "feature")) {
            continue;
        }

        v = ngx_xmpp_node_attr(c, "var");

        if (v == NULL || v->len <= sizeof(suffix) - 1
            || ngx_strncmp(v->data + v->len - (sizeof(suffix) - 1), suffix,
                           sizeof(suffix) - 1) != 0)
        {
            continue;
        }

        size = v->len - (sizeof(suffix) - 1);

        if ((size_t) (p + NGX_XMPP_CAPS_NOTIFY_MAX - last)
            < size + sizeof(uint16_t))
        {
            /* more interests than we keep: the rest are not notified */
            break;
        }

        l = (uint16_t) size;
        last = ngx_cpymem(last, &l, sizeof(uint16_t));
        last = ngx_cpymem(last, v->data, size);
    }

    *out = p;
    *len = last - p;

    return NGX_OK;
}


static ngx_xmpp_caps_entry_t *
ngx_xmpp_caps_find(u_char *ver, size_t len)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_XMPP_CAPS_CACHE; i++) {
        if (ngx_xmpp_caps_cache[i].notify
            && ngx_xmpp_caps_cache[i].ver_len == len
            && ngx_memcmp(ngx_xmpp_caps_cache[i].ver, ver, len) == 0)
        {
            return &ngx_xmpp_caps_cache[i];
        }
    }

    return NULL;
}


static void
ngx_xmpp_caps_store(u_char *ver, size_t len, u_char *notify, size_t nlen)
{
    ngx_xmpp_caps_entry_t  *e;

    e = &ngx_xmpp_caps_cache[ngx_xmpp_caps_next];
    ngx_xmpp_caps_next = (ngx_xmpp_caps_next + 1) % NGX_XMPP_CAPS_CACHE;

    /* the oldest entry makes room (a bounded per-worker cache) */
    if (e->notify) {
        ngx_free(e->notify);
        e->notify = NULL;
    }

    e->notify = ngx_alloc(nlen + 1, ngx_cycle->log);
    if (e->notify == NULL) {
        return;
    }

    ngx_memcpy(e->notify, notify, nlen);
    e->notify_len = nlen;
    ngx_memcpy(e->ver, ver, len);
    e->ver_len = len;
}


static void
ngx_xmpp_caps_cleanup(void *data)
{
    ngx_xmpp_caps_sess_t  *cs = data;

    if (cs->notify) {
        ngx_free(cs->notify);
        cs->notify = NULL;
    }
}


static ngx_xmpp_caps_sess_t *
ngx_xmpp_caps_sess(ngx_xmpp_session_t *s)
{
    ngx_pool_cleanup_t    *cln;
    ngx_xmpp_caps_sess_t  *cs;

    if (s->caps) {
        return s->caps;
    }

    cs = ngx_pcalloc(s->pool, sizeof(ngx_xmpp_caps_sess_t));
    if (cs == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(s->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_xmpp_caps_cleanup;
    cln->data = cs;
    s->caps = cs;

    return cs;
}


/* the session's interests become notify (copied); last items follow */
static void
ngx_xmpp_caps_set(ngx_xmpp_session_t *s, ngx_xmpp_caps_sess_t *cs,
    u_char *ver, size_t len, u_char *notify, size_t nlen)
{
    u_char  *p;

    p = ngx_alloc(nlen + 1, s->connection->log);
    if (p == NULL) {
        return;
    }

    ngx_memcpy(p, notify, nlen);

    if (cs->notify) {
        ngx_free(cs->notify);
    }

    cs->notify = p;
    cs->notify_len = nlen;
    ngx_memcpy(cs->ver, ver, len);
    cs->ver_len = len;

    if (nlen) {
        /* XEP-0163 4.3.2: the last items of the nodes now of interest */
        ngx_xmpp_pep_last_items(s);
    }
}


/* XEP-0115 6.2: what does this ver stand for? */
static void
ngx_xmpp_caps_query(ngx_xmpp_session_t *s, ngx_xmpp_caps_sess_t *cs,
    ngx_str_t *node, ngx_str_t *ver)
{
    ngx_xmpp_wbuf_t  *b;

    static ngx_uint_t  seq;

    cs->qid_len = ngx_sprintf(cs->qid, "caps-%ui", ++seq) - cs->qid;
    ngx_memcpy(cs->pending, ver->data, ver->len);
    cs->pending_len = ver->len;

    b = ngx_xmpp_wbuf_scratch(2048 + 6 * (s->jid.full.len + node->len
                                          + ver->len));

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='get'"
                      " from='");
    ngx_xmpp_wbuf_escs(b, &s->conf->domain);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_add(b, cs->qid, cs->qid_len);
    ngx_xmpp_wbuf_lit(b, "'><query xmlns='" NGX_XMPP_NS_DISCO_INFO
                      "' node='");
    ngx_xmpp_wbuf_escs(b, node);
    ngx_xmpp_wbuf_lit(b, "#");
    ngx_xmpp_wbuf_escs(b, ver);
    ngx_xmpp_wbuf_lit(b, "'/></iq>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/*
 * An available presence of the session's own (broadcast), initial or
 * not: its <c/> says what the client wants to be notified of.
 */
void
ngx_xmpp_caps_presence(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_uint_t initial)
{
    ngx_str_t               *hash, *node, *ver;
    ngx_xmpp_node_t         *c;
    ngx_xmpp_caps_sess_t    *cs;
    ngx_xmpp_caps_entry_t   *e;

    c = ngx_xmpp_node_child(st->node, "c", NGX_XMPP_NS_CAPS);
    if (c == NULL) {
        return;
    }

    hash = ngx_xmpp_node_attr(c, "hash");
    node = ngx_xmpp_node_attr(c, "node");
    ver = ngx_xmpp_node_attr(c, "ver");

    if (hash == NULL || node == NULL || ver == NULL || ver->len == 0
        || ver->len >= NGX_XMPP_CAPS_VER_MAX || node->len > 1023)
    {
        /* legacy (pre-1.5) caps or nonsense: no interests */
        return;
    }

    cs = ngx_xmpp_caps_sess(s);
    if (cs == NULL) {
        return;
    }

    if (cs->ver_len == ver->len
        && ngx_memcmp(cs->ver, ver->data, ver->len) == 0)
    {
        if (initial && cs->notify_len) {
            ngx_xmpp_pep_last_items(s);
        }

        return;
    }

    e = ngx_xmpp_caps_is(hash, "sha-1") ? ngx_xmpp_caps_find(ver->data,
                                                             ver->len)
                                        : NULL;

    if (e) {
        ngx_xmpp_caps_set(s, cs, e->ver, e->ver_len, e->notify,
                          e->notify_len);
        return;
    }

    if (cs->qid_len && cs->pending_len == ver->len
        && ngx_memcmp(cs->pending, ver->data, ver->len) == 0)
    {
        /* already asked */
        return;
    }

    cs->sha1 = ngx_xmpp_caps_is(hash, "sha-1");
    ngx_xmpp_caps_query(s, cs, node, ver);
}


/*
 * A result or error addressed to the server: the answer to our query?
 * NGX_DECLINED: not ours.
 */
ngx_int_t
ngx_xmpp_caps_response(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    u_char                *notify;
    size_t                 nlen;
    ngx_str_t              ver;
    ngx_xmpp_node_t       *q;
    ngx_xmpp_caps_sess_t  *cs;

    cs = s->caps;

    if (cs == NULL || cs->qid_len == 0 || st->id.len != cs->qid_len
        || ngx_memcmp(st->id.data, cs->qid, cs->qid_len) != 0)
    {
        return NGX_DECLINED;
    }

    cs->qid_len = 0;

    q = ngx_xmpp_node_child(st->node, "query", NGX_XMPP_NS_DISCO_INFO);

    if (!ngx_xmpp_caps_is(&st->type, "result") || q == NULL) {
        return NGX_OK;
    }

    if (ngx_xmpp_caps_notify_list(q, &notify, &nlen) != NGX_OK) {
        return NGX_OK;
    }

    /* section 5.4: cached for everyone only when the hash matches */
    if (cs->sha1
        && ngx_xmpp_caps_ver(st->pool, q, &ver) == NGX_OK
        && ver.len == cs->pending_len
        && ngx_memcmp(ver.data, cs->pending, ver.len) == 0)
    {
        ngx_xmpp_caps_store(cs->pending, cs->pending_len, notify, nlen);

    } else {
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "xmpp: caps of %V do not match their hash, "
                      "not cached", &s->jid.full);
    }

    ngx_xmpp_caps_set(s, cs, cs->pending, cs->pending_len, notify, nlen);
    ngx_free(notify);

    return NGX_OK;
}


/*
 * XEP-0198 resumption: the interests a session has, to carry over to
 * the one that resumes it (empty when it has none).
 */
void
ngx_xmpp_caps_get(ngx_xmpp_session_t *s, ngx_str_t *ver, ngx_str_t *notify)
{
    ngx_xmpp_caps_sess_t  *cs;

    cs = s->caps;

    if (cs == NULL || cs->notify == NULL) {
        ngx_str_null(ver);
        ngx_str_null(notify);
        return;
    }

    ver->data = cs->ver;
    ver->len = cs->ver_len;
    notify->data = cs->notify;
    notify->len = cs->notify_len;
}


/*
 * ... and the resumed session has them again (copied; bounded as when
 * they were read).  No last items follow: the client had them, and the
 * stream goes on (XEP-0198 section 5).
 */
ngx_int_t
ngx_xmpp_caps_put(ngx_xmpp_session_t *s, ngx_str_t *ver, ngx_str_t *notify)
{
    u_char                *p;
    ngx_xmpp_caps_sess_t  *cs;

    if (ver->len == 0 || ver->len >= NGX_XMPP_CAPS_VER_MAX
        || notify->len > NGX_XMPP_CAPS_NOTIFY_MAX)
    {
        return NGX_DECLINED;
    }

    cs = ngx_xmpp_caps_sess(s);
    if (cs == NULL) {
        return NGX_ERROR;
    }

    p = ngx_alloc(notify->len + 1, ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, notify->data, notify->len);

    if (cs->notify) {
        ngx_free(cs->notify);
    }

    cs->notify = p;
    cs->notify_len = notify->len;
    ngx_memcpy(cs->ver, ver->data, ver->len);
    cs->ver_len = ver->len;

    return NGX_OK;
}


/* does the session want notifications of node (XEP-0163 4.3.1)? */
ngx_uint_t
ngx_xmpp_caps_notify(ngx_xmpp_session_t *s, ngx_str_t *node)
{
    u_char                *p, *end;
    uint16_t               l;
    ngx_xmpp_caps_sess_t  *cs;

    cs = s->caps;

    if (cs == NULL || cs->notify == NULL) {
        return 0;
    }

    p = cs->notify;
    end = p + cs->notify_len;

    while (end - p >= (ssize_t) sizeof(uint16_t)) {
        ngx_memcpy(&l, p, sizeof(uint16_t));
        p += sizeof(uint16_t);

        if ((size_t) (end - p) < l) {
            return 0;
        }

        if (l == node->len && ngx_memcmp(p, node->data, l) == 0) {
            return 1;
        }

        p += l;
    }

    return 0;
}



/*
 * XEP-0115 6.3: the <c/> the server puts in its stream features hashes
 * its disco#info (ngx_xmpp_disco.c); the tables are fixed at build
 * time, so the ver is computed once.
 */
ngx_str_t *
ngx_xmpp_caps_server_ver(void)
{
    ngx_uint_t              n;
    ngx_str_t               feat[64];
    ngx_xmpp_caps_ident_t   id;

    static u_char     buf[64];
    static ngx_str_t  ver;

    if (ver.len) {
        return &ver;
    }

    ngx_memzero(&id, sizeof(ngx_xmpp_caps_ident_t));
    ngx_str_set(&id.category, NGX_XMPP_DISCO_CATEGORY);
    ngx_str_set(&id.type, NGX_XMPP_DISCO_TYPE);
    ngx_str_set(&id.name, NGX_XMPP_DISCO_NAME);

    for (n = 0; ngx_xmpp_disco_features[n] && n < 64; n++) {
        feat[n].data = (u_char *) ngx_xmpp_disco_features[n];
        feat[n].len = ngx_strlen(feat[n].data);
    }

    ver.data = buf;

    if (ngx_xmpp_caps_hash(&id, 1, feat, n, NULL, 0, &ver) != NGX_OK) {
        ngx_str_set(&ver, "");
    }

    return &ver;
}
