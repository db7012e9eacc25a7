
/*
 * XEP-0049 private XML storage, and the XEP-0402 section 5.3 bridges
 * for bookmarks: urn:xmpp:bookmarks:1#compat (XEP-0048 over XEP-0049)
 * and #compat-pep (XEP-0048 over its XEP-0223 PEP node).
 *
 * Any namespace but storage:bookmarks is kept as the element the client
 * stored, in private_storage (audit/schema/008_pep.sql).  Bookmarks
 * have one source of truth, the urn:xmpp:bookmarks:1 PEP node: a
 * XEP-0049 read of storage:bookmarks is made from its items, and a
 * write replaces them (each <conference/> becomes an item whose id is
 * the room's JID), with PEP notifications to the owner's resources,
 * so that an old client and a new one see the same bookmarks.  The
 * XEP-0223 node storage:bookmarks (one item, "current", holding the
 * <storage/>) is the same view over PEP: an items request reads it, a
 * publish replaces the bookmarks, and every change of the bookmarks,
 * whichever way, is notified on both nodes (XEP-0163 +notify).
 */


#include "ngx_xmpp_pep.h"

#include <libxml/parser.h>
#include <libxml/tree.h>


/* one <conference/> of XEP-0402 as one of XEP-0048 (section 5.3) */
static void
ngx_xmpp_private_bm_legacy(ngx_xmpp_wbuf_t *b, ngx_str_t *id,
    ngx_str_t *payload)
{
    xmlDocPtr    doc;
    xmlNodePtr   root, c;
    xmlChar     *v;
    ngx_str_t    s;

    doc = xmlReadMemory((const char *) payload->data, (int) payload->len,
                        NULL, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR
                                    | XML_PARSE_NOWARNING);
    if (doc == NULL) {
        return;
    }

    root = xmlDocGetRootElement(doc);

    if (root == NULL
        || !xmlStrEqual(root->name, (const xmlChar *) "conference"))
    {
        xmlFreeDoc(doc);
        return;
    }

    ngx_xmpp_wbuf_lit(b, "<conference jid='");
    ngx_xmpp_wbuf_escs(b, id);
    ngx_xmpp_wbuf_lit(b, "'");

    v = xmlGetProp(root, (const xmlChar *) "name");
    if (v) {
        s.data = v;
        s.len = ngx_strlen(v);
        ngx_xmpp_wbuf_lit(b, " name='");
        ngx_xmpp_wbuf_escs(b, &s);
        ngx_xmpp_wbuf_lit(b, "'");
        xmlFree(v);
    }

    v = xmlGetProp(root, (const xmlChar *) "autojoin");
    if (v) {
        ngx_xmpp_wbuf_str(b, (xmlStrEqual(v, (const xmlChar *) "true")
                              || xmlStrEqual(v, (const xmlChar *) "1"))
                             ? " autojoin='true'" : " autojoin='false'");
        xmlFree(v);
    }

    ngx_xmpp_wbuf_lit(b, ">");

    for (c = root->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE
            || !(xmlStrEqual(c->name, (const xmlChar *) "nick")
                 || xmlStrEqual(c->name, (const xmlChar *) "password")))
        {
            continue;
        }

        v = xmlNodeGetContent(c);
        if (v == NULL) {
            continue;
        }

        s.data = v;
        s.len = ngx_strlen(v);
        ngx_xmpp_wbuf_lit(b, "<");
        ngx_xmpp_wbuf_str(b, (const char *) c->name);
        ngx_xmpp_wbuf_lit(b, ">");
        ngx_xmpp_wbuf_escs(b, &s);
        ngx_xmpp_wbuf_lit(b, "</");
        ngx_xmpp_wbuf_str(b, (const char *) c->name);
        ngx_xmpp_wbuf_lit(b, ">");
        xmlFree(v);
    }

    ngx_xmpp_wbuf_lit(b, "</conference>");

    xmlFreeDoc(doc);
}


/* XEP-0402 items (u16 id, u32 payload) as one XEP-0048 <storage/> */
static void
ngx_xmpp_private_bm_storage(ngx_xmpp_wbuf_t *b, u_char *p, u_char *end)
{
    ngx_str_t  id, payload;

    ngx_xmpp_wbuf_lit(b, "<storage xmlns='" NGX_XMPP_NS_STORAGE_BM "'>");

    while (ngx_xmpp_pep_get(&p, end, &id, 0) == NGX_OK
           && ngx_xmpp_pep_get(&p, end, &payload, 1) == NGX_OK)
    {
        ngx_xmpp_private_bm_legacy(b, &id, &payload);
    }

    ngx_xmpp_wbuf_lit(b, "</storage>");
}


/*
 * #compat-pep: a change of the bookmarks, whichever way it was made,
 * reaches the owner's resources whose caps ask for storage:bookmarks
 * (XEP-0163 4.3.1), as the node's one item with the whole list.
 */
void
ngx_xmpp_private_bm_pep_notify(ngx_xmpp_conf_t *xcf, ngx_str_t *owner,
    u_char *items, size_t len)
{
    ngx_str_t        node = ngx_string(NGX_XMPP_NS_STORAGE_BM);
    ngx_xmpp_wbuf_t  ev;

    ngx_memzero(&ev, sizeof(ngx_xmpp_wbuf_t));
    ev.max = 2 * (len + xcf->max_stanza_size) + 4096;

    ngx_xmpp_wbuf_lit(&ev, "<event xmlns='" NGX_XMPP_NS_PUBSUB_EVENT
                      "'><items node='" NGX_XMPP_NS_STORAGE_BM "'>"
                      "<item id='current'>");
    ngx_xmpp_private_bm_storage(&ev, items, items + len);
    ngx_xmpp_wbuf_lit(&ev, "</item></items></event>");

    if (!ev.failed) {
        /* whitelist: the owner's resources only (XEP-0223 section 3) */
        ngx_xmpp_pep_notify(xcf, owner, &node, NULL, 1, ev.start,
                            ev.last - ev.start);
    }

    ngx_xmpp_wbuf_free(&ev);
}


/* the view's answers: XEP-0060 6.5.8 items, 7.1.2 publish */
static void
ngx_xmpp_private_pep_reply(ngx_xmpp_session_t *s, ngx_xmpp_pep_ctx_t *ctx)
{
    ngx_xmpp_wbuf_t  *b;

    if (ctx->error == NGX_XMPP_PEP_E_NOT_FOUND) {
        ngx_xmpp_pep_error(s, &ctx->iq_id, &ctx->iq_to, "cancel",
                           "item-not-found", NULL, NULL);
        return;
    }

    b = ngx_xmpp_pep_result(s, &ctx->iq_id, &ctx->iq_to,
                            s->conf->max_output);

    if (ctx->op == NGX_XMPP_PEP_BM_GET) {
        ngx_xmpp_wbuf_lit(b, "><pubsub xmlns='" NGX_XMPP_NS_PUBSUB "'>"
                          "<items node='" NGX_XMPP_NS_STORAGE_BM "'>"
                          "<item id='current'>");
        ngx_xmpp_private_bm_storage(b, ctx->out.start, ctx->out.last);
        ngx_xmpp_wbuf_lit(b, "</item></items></pubsub></iq>");

    } else {
        ngx_xmpp_wbuf_lit(b, "><pubsub xmlns='" NGX_XMPP_NS_PUBSUB "'>"
                          "<publish node='" NGX_XMPP_NS_STORAGE_BM "'>"
                          "<item id='");
        ngx_xmpp_wbuf_escs(b, &ctx->item_id);
        ngx_xmpp_wbuf_lit(b, "'/></publish></pubsub></iq>");
    }

    ngx_xmpp_pep_send(s, ctx, b);
}


static void
ngx_xmpp_private_get_reply(ngx_xmpp_session_t *s, ngx_xmpp_pep_ctx_t *ctx)
{
    u_char           *p, *end;
    ngx_str_t         payload;
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_pep_result(s, &ctx->iq_id, &ctx->iq_to,
                            s->conf->max_output);

    ngx_xmpp_wbuf_lit(b, "><query xmlns='" NGX_XMPP_NS_PRIVATE "'>");

    p = ctx->out.start;
    end = ctx->out.last;

    if (ctx->op == NGX_XMPP_PEP_BM_GET) {
        ngx_xmpp_private_bm_storage(b, p, end);

    } else if (ngx_xmpp_pep_get(&p, end, &payload, 1) == NGX_OK) {
        ngx_xmpp_wbuf_nstr(b, &payload);

    } else {
        /* XEP-0049 section 2.2: nothing stored, the empty element */
        ngx_xmpp_wbuf_lit(b, "<");
        ngx_xmpp_wbuf_escs(b, &ctx->item_id);
        ngx_xmpp_wbuf_lit(b, " xmlns='");
        ngx_xmpp_wbuf_escs(b, &ctx->node);
        ngx_xmpp_wbuf_lit(b, "'/>");
    }

    ngx_xmpp_wbuf_lit(b, "</query></iq>");

    ngx_xmpp_pep_send(s, ctx, b);
}


static ngx_uint_t
ngx_xmpp_private_has(ngx_str_t *items, ngx_str_t *id)
{
    u_char     *p, *end;
    ngx_str_t   v, payload;

    p = items->data;
    end = p + items->len;

    while (ngx_xmpp_pep_get(&p, end, &v, 0) == NGX_OK
           && ngx_xmpp_pep_get(&p, end, &payload, 1) == NGX_OK)
    {
        if (v.len == id->len && ngx_memcmp(v.data, id->data, v.len) == 0) {
            return 1;
        }
    }

    return 0;
}


/* XEP-0402 section 4: what new clients hear of an old client's write */
static void
ngx_xmpp_private_bm_notify(ngx_xmpp_conf_t *xcf, ngx_xmpp_pep_ctx_t *ctx)
{
    u_char           *p, *end;
    ngx_str_t         id, payload;
    ngx_uint_t        whitelist;
    ngx_xmpp_wbuf_t   ev;

    ngx_memzero(&ev, sizeof(ngx_xmpp_wbuf_t));
    ev.max = 2 * xcf->max_stanza_size + 4096;
    whitelist = (ctx->conf.access == NGX_XMPP_PEP_ACCESS_WHITELIST);

    p = ctx->out.start;
    end = ctx->out.last;

    while (ngx_xmpp_pep_get(&p, end, &id, 0) == NGX_OK
           && ngx_xmpp_pep_get(&p, end, &payload, 1) == NGX_OK)
    {
        if (ngx_xmpp_private_has(&ctx->payload, &id)) {
            continue;
        }

        ev.last = ev.start;
        ngx_xmpp_wbuf_lit(&ev, "<event xmlns='" NGX_XMPP_NS_PUBSUB_EVENT
                          "'><items node='" NGX_XMPP_NS_BOOKMARKS "'>"
                          "<retract id='");
        ngx_xmpp_wbuf_escs(&ev, &id);
        ngx_xmpp_wbuf_lit(&ev, "'/></items></event>");

        if (!ev.failed) {
            ngx_xmpp_pep_notify(xcf, &ctx->owner, &ctx->node, &ctx->subs,
                                whitelist, ev.start, ev.last - ev.start);
        }
    }

    p = ctx->payload.data;
    end = p + ctx->payload.len;

    while (ngx_xmpp_pep_get(&p, end, &id, 0) == NGX_OK
           && ngx_xmpp_pep_get(&p, end, &payload, 1) == NGX_OK)
    {
        ev.last = ev.start;
        ngx_xmpp_wbuf_lit(&ev, "<event xmlns='" NGX_XMPP_NS_PUBSUB_EVENT
                          "'><items node='" NGX_XMPP_NS_BOOKMARKS "'>"
                          "<item id='");
        ngx_xmpp_wbuf_escs(&ev, &id);
        ngx_xmpp_wbuf_lit(&ev, "'>");
        ngx_xmpp_wbuf_nstr(&ev, &payload);
        ngx_xmpp_wbuf_lit(&ev, "</item></items></event>");

        if (!ev.failed) {
            ngx_xmpp_pep_notify(xcf, &ctx->owner, &ctx->node, &ctx->subs,
                                whitelist, ev.start, ev.last - ev.start);
        }
    }

    ngx_xmpp_wbuf_free(&ev);
}


static void
ngx_xmpp_private_done(ngx_xmpp_db_req_t *r)
{
    ngx_uint_t           failed;
    ngx_xmpp_wbuf_t     *b;
    ngx_xmpp_conf_t     *xcf;
    ngx_xmpp_session_t  *s;
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    s = ngx_xmpp_pep_finish(r, &failed);

    if (failed) {
        return;
    }

    if (ctx->error == NGX_XMPP_PEP_E_MAX_NODES) {
        if (s) {
            ngx_xmpp_pep_error(s, &ctx->iq_id, &ctx->iq_to, "wait",
                               "resource-constraint", NULL,
                               "too many namespaces stored");
        }

        return;
    }

    if (ctx->bm_pep) {
        if (s) {
            ngx_xmpp_private_pep_reply(s, ctx);
        }

    } else if (ctx->op == NGX_XMPP_PEP_PRIV_GET
               || ctx->op == NGX_XMPP_PEP_BM_GET)
    {
        /* a bookmarks node that does not exist yet is no bookmarks */
        if (s) {
            ngx_xmpp_private_get_reply(s, ctx);
        }

        return;

    } else if (s) {
        b = ngx_xmpp_pep_result(s, &ctx->iq_id, &ctx->iq_to, 4096);
        ngx_xmpp_wbuf_lit(b, "/>");
        (void) ngx_xmpp_session_send_wbuf(s, b);
    }

    if (ctx->op == NGX_XMPP_PEP_BM_SET && !ctx->error) {
        xcf = ngx_xmpp_cycle_conf((ngx_cycle_t *) ngx_cycle);
        ngx_xmpp_private_bm_notify(xcf, ctx);
        ngx_xmpp_private_bm_pep_notify(xcf, &ctx->owner, ctx->payload.data,
                                       ctx->payload.len);
    }
}


/*
 * XEP-0048 <storage/> as XEP-0402 items: u16 id (the room JID), u32
 * payload, each payload a <conference xmlns='urn:xmpp:bookmarks:1'/>.
 * <url/> bookmarks have no XEP-0402 form and are not kept.
 */
static ngx_int_t
ngx_xmpp_private_bm_convert(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *storage, ngx_xmpp_wbuf_t *out)
{
    ngx_str_t         *jid, *name, *aj, text, payload;
    ngx_uint_t         n;
    ngx_xmpp_jid_t     parsed;
    ngx_xmpp_wbuf_t    pb;
    ngx_xmpp_node_t   *c, *e;

    ngx_memzero(&pb, sizeof(ngx_xmpp_wbuf_t));
    pb.max = s->conf->pep_max_item_size;
    n = 0;

    for (c = storage->child; c; c = c->next) {
        if (!ngx_xmpp_pep_str_is(&c->name, "conference")) {
            continue;
        }

        jid = ngx_xmpp_node_attr(c, "jid");

        if (jid == NULL || jid->len > 255
            || ngx_xmpp_jid_parse(st->pool, jid, &parsed) != NGX_OK)
        {
            ngx_xmpp_wbuf_free(&pb);
            return NGX_DECLINED;
        }

        if (++n > s->conf->pep_max_items) {
            ngx_xmpp_wbuf_free(&pb);
            return NGX_ABORT;
        }

        pb.last = pb.start;
        ngx_xmpp_wbuf_lit(&pb, "<conference xmlns='" NGX_XMPP_NS_BOOKMARKS
                          "'");

        name = ngx_xmpp_node_attr(c, "name");
        if (name) {
            ngx_xmpp_wbuf_lit(&pb, " name='");
            ngx_xmpp_wbuf_escs(&pb, name);
            ngx_xmpp_wbuf_lit(&pb, "'");
        }

        aj = ngx_xmpp_node_attr(c, "autojoin");
        ngx_xmpp_wbuf_str(&pb, (aj && (ngx_xmpp_pep_str_is(aj, "true")
                                       || ngx_xmpp_pep_str_is(aj, "1")))
                               ? " autojoin='true'>" : " autojoin='false'>");

        for (e = c->child; e; e = e->next) {
            if (!ngx_xmpp_pep_str_is(&e->name, "nick")
                && !ngx_xmpp_pep_str_is(&e->name, "password"))
            {
                continue;
            }

            if (ngx_xmpp_node_text(st->pool, e, &text) != NGX_OK) {
                ngx_xmpp_wbuf_free(&pb);
                return NGX_ERROR;
            }

            ngx_xmpp_wbuf_lit(&pb, "<");
            ngx_xmpp_wbuf_nstr(&pb, &e->name);
            ngx_xmpp_wbuf_lit(&pb, ">");
            ngx_xmpp_wbuf_escs(&pb, &text);
            ngx_xmpp_wbuf_lit(&pb, "</");
            ngx_xmpp_wbuf_nstr(&pb, &e->name);
            ngx_xmpp_wbuf_lit(&pb, ">");
        }

        ngx_xmpp_wbuf_lit(&pb, "</conference>");

        if (pb.failed
            || (size_t) (pb.last - pb.start) > s->conf->pep_max_item_size)
        {
            ngx_xmpp_wbuf_free(&pb);
            return NGX_ABORT;
        }

        payload.data = pb.start;
        payload.len = pb.last - pb.start;

        /* the room's bare JID, as the XEP-0402 item id */
        ngx_xmpp_pep_put16(out, &parsed.bare);
        ngx_xmpp_pep_put32(out, &payload);
    }

    ngx_xmpp_wbuf_free(&pb);

    return out->failed ? NGX_ABORT : NGX_OK;
}


/*
 * A <storage/> to write, through XEP-0049 or the XEP-0223 view: the
 * items in out (freed by the caller), as payload; NGX_DECLINED when it
 * cannot be kept, which is answered here.
 */
static ngx_int_t
ngx_xmpp_private_bm_items(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *storage, ngx_xmpp_wbuf_t *out, ngx_str_t *payload)
{
    ngx_int_t   rc;
    ngx_str_t  *to;

    out->max = s->conf->pep_max_node_size;
    rc = ngx_xmpp_private_bm_convert(s, st, storage, out);

    if (rc == NGX_OK
        && (size_t) (out->last - out->start) > s->conf->pep_max_node_size)
    {
        rc = NGX_ABORT;
    }

    if (rc == NGX_OK) {
        payload->data = out->start;
        payload->len = out->last - out->start;
        return NGX_OK;
    }

    to = st->has_to ? ngx_xmpp_node_attr(st->node, "to") : NULL;

    if (rc == NGX_DECLINED) {
        ngx_xmpp_pep_error(s, &st->id, to, "modify", "bad-request", NULL,
                           "a conference without a valid jid");
    } else {
        ngx_xmpp_pep_error(s, &st->id, to, "cancel", "policy-violation",
                           NULL, "too many or too large bookmarks");
    }

    return NGX_DECLINED;
}


/* XEP-0049 section 2 on the user's own account */
void
ngx_xmpp_private_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *q)
{
    ngx_str_t           *in[8], node, payload, *to;
    ngx_uint_t           get, op, n;
    ngx_xmpp_node_t     *e, *c;
    ngx_xmpp_wbuf_t      items;
    ngx_xmpp_db_req_t   *r;

    get = ngx_xmpp_pep_str_is(&st->type, "get");

    if (!get && !ngx_xmpp_pep_str_is(&st->type, "set")) {
        return;
    }

    to = st->has_to ? ngx_xmpp_node_attr(st->node, "to") : NULL;

    if (st->has_to && (st->to.bare.len != s->jid.bare.len
                       || ngx_strncmp(st->to.bare.data, s->jid.bare.data,
                                      s->jid.bare.len) != 0))
    {
        /* section 3: nobody reads or writes another's storage */
        ngx_xmpp_pep_error(s, &st->id, to, "cancel", "forbidden", NULL,
                           NULL);
        return;
    }

    e = NULL;
    n = 0;

    for (c = q->child; c; c = c->next) {
        if (c->name.len && n++ == 0) {
            e = c;
        }
    }

    if (n != 1) {
        ngx_xmpp_pep_error(s, &st->id, to, "modify", "bad-request", NULL,
                           "exactly one child element");
        return;
    }

    if (e->ns.len == 0 || e->ns.len > 255
        || (e->ns.len >= 7 && ngx_strncmp(e->ns.data, "jabber:", 7) == 0))
    {
        /* section 3: the jabber: namespaces are reserved */
        ngx_xmpp_pep_error(s, &st->id, to, "modify", "not-acceptable", NULL,
                           NULL);
        return;
    }

    ngx_memzero(in, sizeof(in));
    ngx_str_null(&payload);
    in[0] = &s->jid.bare;
    in[1] = &e->ns;
    in[2] = &e->name;

    ngx_memzero(&items, sizeof(ngx_xmpp_wbuf_t));

    if (ngx_xmpp_pep_str_is(&e->ns, NGX_XMPP_NS_STORAGE_BM)) {
        ngx_str_set(&node, NGX_XMPP_NS_BOOKMARKS);
        in[1] = &node;
        op = get ? NGX_XMPP_PEP_BM_GET : NGX_XMPP_PEP_BM_SET;

        if (!get) {
            if (ngx_xmpp_private_bm_items(s, st, e, &items, &payload)
                != NGX_OK)
            {
                ngx_xmpp_wbuf_free(&items);
                return;
            }

            in[3] = &payload;
        }

    } else {
        op = get ? NGX_XMPP_PEP_PRIV_GET : NGX_XMPP_PEP_PRIV_SET;

        if (!get) {
            items.max = s->conf->private_max_size;
            ngx_xmpp_serialize(&items, e, NULL);

            if (items.failed || (size_t) (items.last - items.start)
                                > s->conf->private_max_size)
            {
                ngx_xmpp_wbuf_free(&items);
                ngx_xmpp_pep_error(s, &st->id, to, "modify",
                                   "not-acceptable", NULL,
                                   "larger than conclave_private_max_size");
                return;
            }

            payload.data = items.start;
            payload.len = items.last - items.start;
            in[3] = &payload;
        }
    }

    r = ngx_xmpp_pep_req(s, st, op, in);

    ngx_xmpp_wbuf_free(&items);

    if (r == NULL) {
        return;
    }

    r->done = ngx_xmpp_private_done;

    ngx_xmpp_pep_post(s, r);
}


/*
 * #compat-pep: a pubsub request of the owner on storage:bookmarks
 * (XEP-0048 section 3 over XEP-0223).  An items request reads the
 * bookmarks, a publish of <storage/> replaces them; the view has
 * nothing else (its node options are XEP-0223's, fixed).
 */
void
ngx_xmpp_private_pep(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *a, ngx_uint_t get)
{
    ngx_str_t           *in[8], node, id, payload, *to, *v;
    ngx_xmpp_node_t     *item, *storage;
    ngx_xmpp_wbuf_t      items;
    ngx_xmpp_db_req_t   *r;
    ngx_xmpp_pep_ctx_t  *ctx;

    to = st->has_to ? ngx_xmpp_node_attr(st->node, "to") : NULL;

    ngx_memzero(in, sizeof(in));
    ngx_memzero(&items, sizeof(ngx_xmpp_wbuf_t));
    ngx_str_set(&node, NGX_XMPP_NS_BOOKMARKS);
    ngx_str_set(&id, "current");
    in[0] = &s->jid.bare;
    in[1] = &node;
    in[2] = &id;

    if (get != ngx_xmpp_pep_str_is(&a->name, "items")
        || (!get && !ngx_xmpp_pep_str_is(&a->name, "publish")))
    {
        ngx_xmpp_pep_error(s, &st->id, to, "cancel",
                           "feature-not-implemented", NULL,
                           "storage:bookmarks is a view of "
                           NGX_XMPP_NS_BOOKMARKS);
        return;
    }

    if (!get) {
        item = ngx_xmpp_node_first_element(a);
        storage = item ? ngx_xmpp_node_first_element(item) : NULL;

        if (storage == NULL || !ngx_xmpp_pep_str_is(&item->name, "item")
            || !ngx_xmpp_pep_str_is(&storage->name, "storage")
            || !ngx_xmpp_pep_str_is(&storage->ns, NGX_XMPP_NS_STORAGE_BM))
        {
            /* XEP-0060 7.1.3.6 */
            ngx_xmpp_pep_error(s, &st->id, to, "modify", "bad-request",
                               "invalid-payload", NULL);
            return;
        }

        v = ngx_xmpp_node_attr(item, "id");
        if (v && v->len && v->len <= NGX_XMPP_PEP_NAME_MAX) {
            in[2] = v;
        }

        if (ngx_xmpp_private_bm_items(s, st, storage, &items, &payload)
            != NGX_OK)
        {
            ngx_xmpp_wbuf_free(&items);
            return;
        }

        in[3] = &payload;
    }

    r = ngx_xmpp_pep_req(s, st, get ? NGX_XMPP_PEP_BM_GET
                                    : NGX_XMPP_PEP_BM_SET, in);

    ngx_xmpp_wbuf_free(&items);

    if (r == NULL) {
        return;
    }

    ctx = r->ctx;
    ctx->bm_pep = 1;
    r->done = ngx_xmpp_private_done;

    ngx_xmpp_pep_post(s, r);
}
