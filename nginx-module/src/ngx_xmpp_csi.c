
/*
 * XEP-0352 Client State Indication (urn:xmpp:csi:0).  A client that
 * says <inactive/> (a phone in a pocket) is spared what can wait; on
 * <active/> it gets it all, in the order it arrived.
 *
 * What waits (XEP-0352 section 6 leaves the policy to the server):
 *   - presence without a type or "unavailable": only the latest one
 *     from each sender's full JID is kept, the older is dropped, since
 *     it describes a state that no longer holds;
 *   - a chat state notification without a body (XEP-0085): likewise
 *     the latest per sender, and dropped when a message with a body
 *     from that sender comes through (which supersedes it).
 * Everything else goes at once: messages with a body, subscription
 * requests, iq, errors, MUC messages.
 *
 * Memory is bounded per session by conclave_csi_max_held stanzas and
 * conclave_csi_max_held_size bytes.  When the next stanza would not
 * fit, everything held is sent first (as Prosody's mod_csi_simple
 * does), so nothing is lost and nothing is kept beyond the bound.  The
 * queue lives on the heap while the session is inactive and is freed
 * on <active/> and with the session; held stanzas of a session that
 * ends are dropped like the rest of its state.
 */


#include "ngx_xmpp.h"


#define NGX_XMPP_CSI_URGENT    0
#define NGX_XMPP_CSI_PRESENCE  1
#define NGX_XMPP_CSI_CHATSTATE 2

#define NGX_XMPP_CSI_FROM_MAX  (3 * NGX_XMPP_JID_PART_MAX + 3)


typedef struct {
    size_t                 off;           /* from, then the stanza */
    size_t                 from_len;
    size_t                 len;
    ngx_uint_t             kind;
    unsigned               live:1;
} ngx_xmpp_held_entry_t;


struct ngx_xmpp_held_s {
    ngx_xmpp_wbuf_t        buf;
    ngx_xmpp_held_entry_t *entries;       /* csi_max_held of them */
    ngx_uint_t             n;
    ngx_uint_t             live;
};


static void
ngx_xmpp_csi_cleanup(void *data)
{
    ngx_xmpp_held_t  *h = data;

    ngx_xmpp_wbuf_free(&h->buf);
}


static ngx_uint_t
ngx_xmpp_csi_has(u_char *data, size_t len, const char *what)
{
    return ngx_strlcasestrn(data, data + len, (u_char *) what,
                            ngx_strlen(what) - 1)
           != NULL;
}


static ngx_uint_t
ngx_xmpp_csi_kind(u_char *data, size_t len)
{
    u_char     buf[16];
    ngx_str_t  type;

    if (len > sizeof("<presence") - 1
        && ngx_strncmp(data, "<presence", sizeof("<presence") - 1) == 0)
    {
        if (ngx_xmpp_router_peek(data, len, "type", buf, sizeof(buf), &type)
            != NGX_OK
            || (type.len == 11
                && ngx_strncmp(type.data, "unavailable", 11) == 0))
        {
            return NGX_XMPP_CSI_PRESENCE;
        }

        /* subscription states and errors matter now */
        return NGX_XMPP_CSI_URGENT;
    }

    if (len > sizeof("<message") - 1
        && ngx_strncmp(data, "<message", sizeof("<message") - 1) == 0
        && !ngx_xmpp_csi_has(data, len, "<body")
        && ngx_xmpp_csi_has(data, len,
                            "xmlns='http://jabber.org/protocol/chatstates'"))
    {
        return NGX_XMPP_CSI_CHATSTATE;
    }

    return NGX_XMPP_CSI_URGENT;
}


/* drops the held stanza of kind from "from", if there is one */
static void
ngx_xmpp_csi_forget(ngx_xmpp_held_t *h, ngx_uint_t kind, ngx_str_t *from)
{
    ngx_uint_t              i;
    ngx_xmpp_held_entry_t  *e;

    for (i = 0; i < h->n; i++) {
        e = &h->entries[i];

        if (e->live && e->kind == kind && e->from_len == from->len
            && ngx_memcmp(h->buf.start + e->off, from->data, from->len) == 0)
        {
            e->live = 0;
            h->live--;
            return;
        }
    }
}


/* everything held goes out in order; the queue is then empty */
static void
ngx_xmpp_csi_flush(ngx_xmpp_session_t *s)
{
    ngx_uint_t              i;
    ngx_xmpp_held_t        *h;
    ngx_xmpp_held_entry_t  *e;

    h = s->held;

    if (h == NULL) {
        return;
    }

    for (i = 0; i < h->n; i++) {
        e = &h->entries[i];

        if (e->live) {
            (void) ngx_xmpp_session_send(s, h->buf.start + e->off
                                         + e->from_len, e->len);
        }
    }

    h->n = 0;
    h->live = 0;
    h->buf.last = h->buf.start;
    h->buf.failed = 0;
}


/* moves the live entries to the front; returns the bytes they use */
static void
ngx_xmpp_csi_compact(ngx_xmpp_held_t *h)
{
    u_char                 *p;
    ngx_uint_t              i, m;
    ngx_xmpp_held_entry_t  *e;

    p = h->buf.start;

    for (i = 0, m = 0; i < h->n; i++) {
        e = &h->entries[i];

        if (!e->live) {
            continue;
        }

        ngx_memmove(p, h->buf.start + e->off, e->from_len + e->len);
        e->off = p - h->buf.start;
        p += e->from_len + e->len;
        h->entries[m++] = *e;
    }

    h->n = m;
    h->buf.last = p;
}


static ngx_xmpp_held_t *
ngx_xmpp_csi_queue(ngx_xmpp_session_t *s)
{
    ngx_xmpp_held_t     *h;
    ngx_pool_cleanup_t  *cln;

    if (s->held) {
        return s->held;
    }

    h = ngx_pcalloc(s->pool, sizeof(ngx_xmpp_held_t));
    if (h == NULL) {
        return NULL;
    }

    h->entries = ngx_pcalloc(s->pool, s->conf->csi_max_held
                                      * sizeof(ngx_xmpp_held_entry_t));
    if (h->entries == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(s->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_xmpp_csi_cleanup;
    cln->data = h;

    h->buf.max = s->conf->csi_max_held_size;
    s->held = h;

    return h;
}


/*
 * The router's last step for a bound session (ngx_xmpp_router_inbound):
 * NGX_DECLINED to send the stanza now, NGX_OK when it is held.
 */
ngx_int_t
ngx_xmpp_csi_filter(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    u_char                  buf[NGX_XMPP_CSI_FROM_MAX];
    size_t                  need;
    ngx_str_t               from;
    ngx_uint_t              kind;
    ngx_xmpp_held_t        *h;
    ngx_xmpp_held_entry_t  *e;

    if (!s->csi_inactive) {
        return NGX_DECLINED;
    }

    kind = ngx_xmpp_csi_kind(data, len);

    if (ngx_xmpp_router_peek(data, len, "from", buf, sizeof(buf), &from)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (kind == NGX_XMPP_CSI_URGENT) {
        if (s->held && s->held->live
            && len > sizeof("<message") - 1
            && ngx_strncmp(data, "<message", sizeof("<message") - 1) == 0)
        {
            ngx_xmpp_csi_forget(s->held, NGX_XMPP_CSI_CHATSTATE, &from);
        }

        return NGX_DECLINED;
    }

    need = from.len + len;

    if (need > s->conf->csi_max_held_size) {
        return NGX_DECLINED;
    }

    h = ngx_xmpp_csi_queue(s);
    if (h == NULL) {
        return NGX_DECLINED;
    }

    ngx_xmpp_csi_forget(h, kind, &from);

    if (h->n == s->conf->csi_max_held
        || (size_t) (h->buf.last - h->buf.start) + need > h->buf.max)
    {
        ngx_xmpp_csi_compact(h);
    }

    if (h->n == s->conf->csi_max_held
        || (size_t) (h->buf.last - h->buf.start) + need > h->buf.max)
    {
        /* the bound: what is held goes now, this one is held next */
        ngx_xmpp_csi_flush(s);
    }

    e = &h->entries[h->n];
    e->off = h->buf.last - h->buf.start;

    ngx_xmpp_wbuf_add(&h->buf, from.data, from.len);
    ngx_xmpp_wbuf_add(&h->buf, data, len);

    if (h->buf.failed) {
        /* no memory: the stanza goes now rather than never */
        h->buf.failed = 0;
        h->buf.last = h->buf.start + e->off;
        return NGX_DECLINED;
    }

    e->from_len = from.len;
    e->len = len;
    e->kind = kind;
    e->live = 1;
    h->n++;
    h->live++;

    return NGX_OK;
}


/* <active/> and <inactive/> (XEP-0352 section 4), any time after auth */
void
ngx_xmpp_csi_element(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    if (n->child != NULL) {
        ngx_xmpp_session_error(s, "invalid-xml",
                               "CSI elements are empty");
        return;
    }

    if (n->name.len == 6 && ngx_strncmp(n->name.data, "active", 6) == 0) {
        s->csi_inactive = 0;
        ngx_xmpp_csi_flush(s);
        ngx_xmpp_csi_free(s);
        return;
    }

    if (n->name.len == 8 && ngx_strncmp(n->name.data, "inactive", 8) == 0) {
        s->csi_inactive = 1;
        return;
    }

    ngx_xmpp_session_error(s, "unsupported-stanza-type", NULL);
}


/*
 * XEP-0198: a session parked while inactive hands on what it held, in
 * order (*i from 0); NGX_DONE after the last.
 */
ngx_int_t
ngx_xmpp_csi_held(ngx_xmpp_session_t *s, ngx_uint_t *i, u_char **data,
    size_t *len)
{
    ngx_xmpp_held_t        *h;
    ngx_xmpp_held_entry_t  *e;

    h = s->held;

    while (h && *i < h->n) {
        e = &h->entries[(*i)++];

        if (e->live) {
            *data = h->buf.start + e->off + e->from_len;
            *len = e->len;
            return NGX_OK;
        }
    }

    return NGX_DONE;
}


/* gives the queue's memory back (its cleanup runs with the pool) */
void
ngx_xmpp_csi_free(ngx_xmpp_session_t *s)
{
    if (s->held && s->held->live == 0) {
        ngx_xmpp_wbuf_free(&s->held->buf);
        s->held->n = 0;
    }
}
