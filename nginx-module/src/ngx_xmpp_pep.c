
/*
 * XEP-0163 Personal Eventing Protocol: a pubsub service (XEP-0060) on
 * every account's bare JID, stored in MariaDB (audit/schema/008_pep.sql,
 * docs/pep.md).
 *
 * The owner publishes (a node is created on first publish, XEP-0163
 * section 3), retracts, reads, configures and deletes; other users of
 * the domain read items as the node's access model allows (presence:
 * a subscription "from" the owner, or a shared directory contact;
 * open: anyone; whitelist: the owner alone).  Publish-options are
 * preconditions (XEP-0060 7.1.5), which XEP-0223 and XEP-0402 rely on.
 *
 * Every request is one transaction in a pool thread (ngx_xmpp_db.c),
 * which also reads the owner's subscribers.  Its done() answers the iq
 * and sends the notifications: headline messages to the owner's
 * resources and the subscribers' (XEP-0163 section 4), each delivered
 * only where the receiving session announced "<node>+notify" in its
 * XEP-0115 caps (ngx_xmpp_caps.c).  Sessions of other workers get the
 * notification over the inter-worker channel and filter it there,
 * where their caps are known (ngx_xmpp_pepfan.c).
 */


#include "ngx_xmpp.h"
#include "ngx_xmpp_pep.h"


void
ngx_xmpp_pep_config_default(ngx_xmpp_pep_config_t *c)
{
    /* XEP-0163 section 5: presence access, the last item kept */
    c->access = NGX_XMPP_PEP_ACCESS_PRESENCE;
    c->persist = 1;
    c->max_items = 1;
    c->send_last = NGX_XMPP_PEP_LAST_ON_SUB_AND_PRESENCE;
    c->set = 0;
}


/*
 * A jabber:x:data form of XEP-0060 node options (section 16.4.4):
 * pubsub#access_model, #persist_items, #max_items and
 * #send_last_published_item; other fields are accepted and ignored.
 * NGX_DECLINED: a value we cannot honour (precondition-not-met for
 * publish-options, not-acceptable for a configuration);
 * NGX_ABORT: max_items over conclave_pep_max_items (policy-violation).
 */
ngx_int_t
ngx_xmpp_pep_form(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool,
    ngx_xmpp_node_t *x, ngx_xmpp_pep_config_t *c)
{
    ngx_int_t         v;
    ngx_str_t        *var, val;
    ngx_xmpp_node_t  *f, *value;

    if (x == NULL) {
        return NGX_OK;
    }

    for (f = x->child; f; f = f->next) {
        if (!ngx_xmpp_pep_str_is(&f->name, "field")) {
            continue;
        }

        var = ngx_xmpp_node_attr(f, "var");
        value = ngx_xmpp_node_child(f, "value", "jabber:x:data");

        if (var == NULL || value == NULL) {
            continue;
        }

        if (ngx_xmpp_node_text(pool, value, &val) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ngx_xmpp_pep_str_is(var, "pubsub#access_model")) {
            v = ngx_xmpp_pep_lookup(ngx_xmpp_pep_access, &val);
            if (v == NGX_ERROR) {
                return NGX_DECLINED;
            }

            c->access = v;
            c->set |= NGX_XMPP_PEP_SET_ACCESS;

        } else if (ngx_xmpp_pep_str_is(var, "pubsub#persist_items")) {
            if (ngx_xmpp_pep_str_is(&val, "true")
                || ngx_xmpp_pep_str_is(&val, "1"))
            {
                c->persist = 1;

            } else if (ngx_xmpp_pep_str_is(&val, "false")
                       || ngx_xmpp_pep_str_is(&val, "0"))
            {
                c->persist = 0;

            } else {
                return NGX_DECLINED;
            }

            c->set |= NGX_XMPP_PEP_SET_PERSIST;

        } else if (ngx_xmpp_pep_str_is(var, "pubsub#max_items")) {
            if (ngx_xmpp_pep_str_is(&val, "max")) {
                c->max_items = 0;

            } else {
                v = ngx_atoi(val.data, val.len);
                if (v == NGX_ERROR || v == 0) {
                    return NGX_DECLINED;
                }

                if ((ngx_uint_t) v > xcf->pep_max_items) {
                    return NGX_ABORT;
                }

                c->max_items = v;
            }

            c->set |= NGX_XMPP_PEP_SET_MAX;

        } else if (ngx_xmpp_pep_str_is(var,
                                       "pubsub#send_last_published_item"))
        {
            v = ngx_xmpp_pep_lookup(ngx_xmpp_pep_send_last_names, &val);
            if (v == NGX_ERROR) {
                return NGX_DECLINED;
            }

            c->send_last = v;
            c->set |= NGX_XMPP_PEP_SET_LAST;
        }
    }

    return NGX_OK;
}


/* ---- event loop ---- */


static void
ngx_xmpp_pep_cleanup(ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    ngx_free(ctx->mem);
    ngx_free(ctx->fields.data);
    ngx_free(ctx->avatar_data.data);
    ngx_xmpp_wbuf_free(&ctx->out);
    ngx_xmpp_wbuf_free(&ctx->subs);
}


/* "<iq type from to id" of an answer from the account (or from) */
static ngx_xmpp_wbuf_t *
ngx_xmpp_pep_head(ngx_xmpp_session_t *s, const char *type, ngx_str_t *id,
    ngx_str_t *from, size_t max)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(max);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='");
    ngx_xmpp_wbuf_str(b, type);
    ngx_xmpp_wbuf_lit(b, "' from='");

    if (from && from->len) {
        ngx_xmpp_wbuf_escs(b, from);
    } else {
        ngx_xmpp_wbuf_escs(b, &s->jid.bare);
    }

    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_escs(b, id);
    ngx_xmpp_wbuf_lit(b, "'");

    return b;
}


/*
 * An error of XEP-0060 with its application condition (section 7.1.3
 * and following); app may be NULL.
 */
void
ngx_xmpp_pep_error(ngx_xmpp_session_t *s, ngx_str_t *id, ngx_str_t *from,
    const char *type, const char *cond, const char *app, const char *text)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_pep_head(s, "error", id, from, 4096);

    ngx_xmpp_wbuf_lit(b, "><error type='");
    ngx_xmpp_wbuf_str(b, type);
    ngx_xmpp_wbuf_lit(b, "'><");
    ngx_xmpp_wbuf_str(b, cond);
    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_STANZAS "'/>");

    if (app) {
        ngx_xmpp_wbuf_lit(b, "<");
        ngx_xmpp_wbuf_str(b, app);
        ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_PUBSUB_ERRORS "'/>");
    }

    if (text) {
        ngx_xmpp_wbuf_lit(b, "<text xmlns='" NGX_XMPP_NS_STANZAS "'>");
        ngx_xmpp_wbuf_str(b, text);
        ngx_xmpp_wbuf_lit(b, "</text>");
    }

    ngx_xmpp_wbuf_lit(b, "</error></iq>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/* starts a result; the caller adds the payload and "</iq>" or "/>" */
ngx_xmpp_wbuf_t *
ngx_xmpp_pep_result(ngx_xmpp_session_t *s, ngx_str_t *id, ngx_str_t *from,
    size_t max)
{
    return ngx_xmpp_pep_head(s, "result", id, from, max);
}


/* sends a whole result; past conclave_max_output, never truncated */
void
ngx_xmpp_pep_send(ngx_xmpp_session_t *s, ngx_xmpp_pep_ctx_t *ctx,
    ngx_xmpp_wbuf_t *b)
{
    if (b->failed) {
        ngx_xmpp_pep_error(s, &ctx->iq_id, &ctx->iq_to, "wait",
                           "resource-constraint", NULL,
                           "the result is too large");
        return;
    }

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/*
 * What every done handler starts with: the requester's session if it
 * is still bound, else NULL; a request MariaDB failed (*failed) is
 * logged and answered here (a last-item replay has nobody to answer).
 */
ngx_xmpp_session_t *
ngx_xmpp_pep_finish(ngx_xmpp_db_req_t *r, ngx_uint_t *failed)
{
    ngx_xmpp_session_t  *s;
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    s = ngx_xmpp_session_find(ctx->sid);
    if (s && !s->bound) {
        s = NULL;
    }

    *failed = (r->rc != NGX_XMPP_DB_OK);

    if (*failed && ctx->op != NGX_XMPP_PEP_LAST) {
        ngx_log_error(NGX_LOG_ERR, s ? s->connection->log : ngx_cycle->log,
                      0, "xmpp: pep request on %V failed (%ui, "
                      "MariaDB error %ud): %s", &ctx->node, r->rc,
                      r->db_errno, r->err);

        if (s) {
            ngx_xmpp_pep_error(s, &ctx->iq_id, &ctx->iq_to, "wait",
                               "internal-server-error", NULL,
                               "storage is unavailable");
        }
    }

    return s;
}


static void
ngx_xmpp_pep_st_error(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    const char *type, const char *cond, const char *app, const char *text)
{
    ngx_str_t  *to;

    to = st->has_to ? ngx_xmpp_node_attr(st->node, "to") : NULL;

    ngx_xmpp_pep_error(s, &st->id, to, type, cond, app, text);
}


static void
ngx_xmpp_pep_fail(ngx_xmpp_session_t *s, ngx_xmpp_pep_ctx_t *ctx)
{
    ngx_str_t  *id, *to;

    id = &ctx->iq_id;
    to = &ctx->iq_to;

    switch (ctx->error) {
    case NGX_XMPP_PEP_E_NOT_FOUND:
        ngx_xmpp_pep_error(s, id, to, "cancel", "item-not-found", NULL,
                           NULL);
        break;
    case NGX_XMPP_PEP_E_PRECONDITION:
        ngx_xmpp_pep_error(s, id, to, "cancel", "conflict",
                           "precondition-not-met", NULL);
        break;
    case NGX_XMPP_PEP_E_NODE_FULL:
        ngx_xmpp_pep_error(s, id, to, "cancel", "policy-violation", NULL,
                           "the node's items exceed conclave_pep_max_node_"
                           "size");
        break;
    case NGX_XMPP_PEP_E_MAX_NODES:
        ngx_xmpp_pep_error(s, id, to, "cancel", "policy-violation", NULL,
                           "too many nodes (conclave_pep_max_nodes)");
        break;
    case NGX_XMPP_PEP_E_PRESENCE:
        ngx_xmpp_pep_error(s, id, to, "auth", "not-authorized",
                           "presence-subscription-required", NULL);
        break;
    case NGX_XMPP_PEP_E_WHITELIST:
        ngx_xmpp_pep_error(s, id, to, "cancel", "not-allowed",
                           "closed-node", NULL);
        break;
    case NGX_XMPP_PEP_E_EXISTS:
        ngx_xmpp_pep_error(s, id, to, "cancel", "conflict", NULL, NULL);
        break;
    case NGX_XMPP_PEP_E_AVATAR:
        /* XEP-0398 3.1: the metadata must name published data */
        ngx_xmpp_pep_error(s, id, to, "modify", "not-acceptable", NULL,
                           "no urn:xmpp:avatar:data item whose SHA-1 is "
                           "the info id");
        break;
    }
}


static void
ngx_xmpp_pep_config_form(ngx_xmpp_wbuf_t *b, ngx_xmpp_pep_config_t *c)
{
    u_char  num[NGX_INT_T_LEN];

    ngx_xmpp_wbuf_lit(b, "<x xmlns='jabber:x:data' type='form'>"
        "<field var='FORM_TYPE' type='hidden'><value>"
        NGX_XMPP_NS_PUBSUB "#node_config</value></field>"
        "<field var='pubsub#access_model' type='list-single'><value>");
    ngx_xmpp_wbuf_str(b, ngx_xmpp_pep_access[c->access]);
    ngx_xmpp_wbuf_lit(b, "</value><option><value>open</value></option>"
        "<option><value>presence</value></option>"
        "<option><value>whitelist</value></option></field>"
        "<field var='pubsub#persist_items' type='boolean'><value>");
    ngx_xmpp_wbuf_str(b, c->persist ? "true" : "false");
    ngx_xmpp_wbuf_lit(b, "</value></field>"
        "<field var='pubsub#max_items' type='text-single'><value>");

    if (c->max_items) {
        ngx_xmpp_wbuf_add(b, num, ngx_sprintf(num, "%ui", c->max_items)
                                  - num);
    } else {
        ngx_xmpp_wbuf_lit(b, "max");
    }

    ngx_xmpp_wbuf_lit(b, "</value></field>"
        "<field var='pubsub#send_last_published_item' type='list-single'>"
        "<value>");
    ngx_xmpp_wbuf_str(b, ngx_xmpp_pep_send_last_names[c->send_last]);
    ngx_xmpp_wbuf_lit(b, "</value><option><value>never</value></option>"
        "<option><value>on_sub</value></option>"
        "<option><value>on_sub_and_presence</value></option>"
        "</field></x>");
}


static void
ngx_xmpp_pep_reply(ngx_xmpp_session_t *s, ngx_xmpp_pep_ctx_t *ctx)
{
    u_char           *p, *end;
    ngx_str_t         id, payload;
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_pep_result(s, &ctx->iq_id, &ctx->iq_to,
                            s->conf->max_output);

    switch (ctx->op) {

    case NGX_XMPP_PEP_PUBLISH:
        /* XEP-0060 7.1.2: the item id, which may be the server's */
        ngx_xmpp_wbuf_lit(b, "><pubsub xmlns='" NGX_XMPP_NS_PUBSUB "'>"
                          "<publish node='");
        ngx_xmpp_wbuf_escs(b, &ctx->node);
        ngx_xmpp_wbuf_lit(b, "'><item id='");
        ngx_xmpp_wbuf_escs(b, &ctx->item_id);
        ngx_xmpp_wbuf_lit(b, "'/></publish></pubsub></iq>");
        break;

    case NGX_XMPP_PEP_ITEMS:
        ngx_xmpp_wbuf_lit(b, "><pubsub xmlns='" NGX_XMPP_NS_PUBSUB "'>"
                          "<items node='");
        ngx_xmpp_wbuf_escs(b, &ctx->node);
        ngx_xmpp_wbuf_lit(b, "'>");

        p = ctx->out.start;
        end = ctx->out.last;

        while (ngx_xmpp_pep_get(&p, end, &id, 0) == NGX_OK
               && ngx_xmpp_pep_get(&p, end, &payload, 1) == NGX_OK)
        {
            ngx_xmpp_wbuf_lit(b, "<item id='");
            ngx_xmpp_wbuf_escs(b, &id);
            ngx_xmpp_wbuf_lit(b, "'>");
            ngx_xmpp_wbuf_nstr(b, &payload);
            ngx_xmpp_wbuf_lit(b, "</item>");
        }

        ngx_xmpp_wbuf_lit(b, "</items></pubsub></iq>");
        break;

    case NGX_XMPP_PEP_CONF_GET:
        ngx_xmpp_wbuf_lit(b, "><pubsub xmlns='" NGX_XMPP_NS_PUBSUB_OWNER
                          "'><configure node='");
        ngx_xmpp_wbuf_escs(b, &ctx->node);
        ngx_xmpp_wbuf_lit(b, "'>");
        ngx_xmpp_pep_config_form(b, &ctx->conf);
        ngx_xmpp_wbuf_lit(b, "</configure></pubsub></iq>");
        break;

    default:
        ngx_xmpp_wbuf_lit(b, "/>");
        break;
    }

    ngx_xmpp_pep_send(s, ctx, b);
}


static void
ngx_xmpp_pep_done(ngx_xmpp_db_req_t *r)
{
    ngx_uint_t           failed;
    ngx_xmpp_wbuf_t      ev;
    ngx_xmpp_conf_t     *xcf;
    ngx_xmpp_session_t  *s;
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    xcf = ngx_xmpp_cycle_conf((ngx_cycle_t *) ngx_cycle);

    if (ctx->op == NGX_XMPP_PEP_VCARD_GET
        || ctx->op == NGX_XMPP_PEP_AVATAR_LOAD)
    {
        /* they answer failures themselves (a bind result is owed) */
        s = ngx_xmpp_session_find(ctx->sid);
        ngx_xmpp_avatar_done(s && s->bound ? s : NULL, r);
        return;
    }

    s = ngx_xmpp_pep_finish(r, &failed);

    if (failed) {
        return;
    }

    if (ctx->op == NGX_XMPP_PEP_LAST_OF) {
        ngx_xmpp_pep_send_last_of(xcf, ctx);
        return;
    }

    if (ctx->op == NGX_XMPP_PEP_LAST) {
        if (s) {
            ngx_xmpp_pep_send_last(s, ctx);
        }

        return;
    }

    if (ctx->error) {
        if (s) {
            ngx_xmpp_pep_fail(s, ctx);
        }

        return;
    }

    if (s) {
        ngx_xmpp_pep_reply(s, ctx);
    }

    if (ctx->bm_list) {
        /* XEP-0402 5.3: storage:bookmarks (XEP-0223) subscribers too */
        ngx_xmpp_private_bm_pep_notify(xcf, &ctx->owner, ctx->out.start,
                                       ctx->out.last - ctx->out.start);
    }

    ngx_xmpp_avatar_published(xcf, ctx);

    if (ctx->op != NGX_XMPP_PEP_PUBLISH && ctx->op != NGX_XMPP_PEP_DELETE
        && !(ctx->op == NGX_XMPP_PEP_RETRACT && ctx->notify)
        && !(ctx->op == NGX_XMPP_PEP_VCARD_SET && ctx->avatar))
    {
        return;
    }

    ngx_memzero(&ev, sizeof(ngx_xmpp_wbuf_t));
    ev.max = ctx->payload.len + 4 * ctx->node.len + 4 * ctx->item_id.len
             + 1024;

    if (ngx_xmpp_pep_event(&ev, ctx) == NGX_OK) {
        ngx_xmpp_pep_notify(xcf, &ctx->owner, &ctx->node, &ctx->subs,
                            ctx->conf.access
                            == NGX_XMPP_PEP_ACCESS_WHITELIST,
                            ev.start, ev.last - ev.start);
    }

    ngx_xmpp_wbuf_free(&ev);
}


/*
 * XEP-0163 4.3.2 and 6.1 (send_last_published_item
 * on_sub_and_presence): the roster (ngx_xmpp_roster.c) approved the
 * subscriber's presence subscription to the publisher, so the
 * subscriber's resources get the publisher's last items now, not at
 * their next available presence.
 */
void
ngx_xmpp_pep_approved(ngx_xmpp_conf_t *xcf, ngx_str_t *publisher,
    ngx_str_t *subscriber)
{
    ngx_xmpp_db_req_t   *r;
    ngx_xmpp_pep_ctx_t  *ctx;

    r = ngx_xmpp_db_create(xcf, sizeof(ngx_xmpp_pep_ctx_t), ngx_cycle->log);
    if (r == NULL) {
        return;
    }

    r->run = ngx_xmpp_pep_run;
    r->done = ngx_xmpp_pep_done;
    r->cleanup = ngx_xmpp_pep_cleanup;

    ctx = r->ctx;
    ctx->op = NGX_XMPP_PEP_LAST_OF;
    ctx->out.max = ngx_max(xcf->max_output, xcf->pep_max_node_size + 65536);

    ctx->mem = ngx_alloc(publisher->len + subscriber->len + 1,
                         ngx_cycle->log);
    if (ctx->mem == NULL) {
        ngx_xmpp_db_destroy(r);
        return;
    }

    ctx->owner.data = ctx->mem;
    ctx->owner.len = publisher->len;
    ctx->requester.data = ngx_cpymem(ctx->mem, publisher->data,
                                     publisher->len);
    ctx->requester.len = subscriber->len;
    ngx_memcpy(ctx->requester.data, subscriber->data, subscriber->len);

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_db_destroy(r);
    }
}


/*
 * A request of session s; the strings are copied into one block.  st
 * is NULL for the server's own requests (the last items).
 */
ngx_xmpp_db_req_t *
ngx_xmpp_pep_req(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_uint_t op, ngx_str_t **in)
{
    u_char              *p;
    size_t               size;
    ngx_str_t           *to, none, *dst[8];
    ngx_uint_t           i;
    ngx_xmpp_db_req_t   *r;
    ngx_xmpp_pep_ctx_t  *ctx;

    /* in: owner, node, item id, payload, ids (each may be NULL) */

    r = ngx_xmpp_db_create(s->conf, sizeof(ngx_xmpp_pep_ctx_t),
                           s->connection->log);
    if (r == NULL) {
        goto failed;
    }

    r->run = ngx_xmpp_pep_run;
    r->done = ngx_xmpp_pep_done;
    r->cleanup = ngx_xmpp_pep_cleanup;

    ctx = r->ctx;
    ctx->sid = s->id;
    ctx->op = op;
    ctx->limit_items = s->conf->pep_max_items;
    ctx->limit_nodes = s->conf->pep_max_nodes;
    ctx->limit_size = s->conf->pep_max_node_size;
    ngx_xmpp_pep_config_default(&ctx->want);

    /* rows come from bounded nodes and rosters; these bound them again */
    ctx->out.max = ngx_max(s->conf->max_output,
                           s->conf->pep_max_node_size + 65536);
    ctx->subs.max = (s->conf->roster_max_items + 1) * 260;

    ngx_str_null(&none);
    to = st ? ngx_xmpp_node_attr(st->node, "to") : NULL;
    if (to == NULL || !st->has_to) {
        to = &none;
    }

    dst[0] = &ctx->owner;
    dst[1] = &ctx->node;
    dst[2] = &ctx->item_id;
    dst[3] = &ctx->payload;
    dst[4] = &ctx->ids;
    dst[5] = &ctx->requester;
    dst[6] = &ctx->iq_id;
    dst[7] = &ctx->iq_to;

    /* the server's own requests may name the iq to answer (in[6], [7]) */
    in[5] = &s->jid.bare;
    in[6] = st ? &st->id : (in[6] ? in[6] : &none);
    in[7] = st ? to : (in[7] ? in[7] : &none);

    size = 1;

    for (i = 0; i < 8; i++) {
        size += in[i] ? in[i]->len : 0;
    }

    ctx->mem = ngx_alloc(size, s->connection->log);
    if (ctx->mem == NULL) {
        ngx_xmpp_db_destroy(r);
        goto failed;
    }

    p = ctx->mem;

    for (i = 0; i < 8; i++) {
        dst[i]->data = p;
        dst[i]->len = in[i] ? in[i]->len : 0;

        if (in[i] && in[i]->len) {
            p = ngx_cpymem(p, in[i]->data, in[i]->len);
        }
    }

    return r;

failed:

    if (st) {
        ngx_xmpp_pep_st_error(s, st, "wait", "internal-server-error", NULL,
                              NULL);
    }

    return NULL;
}


void
ngx_xmpp_pep_post(ngx_xmpp_session_t *s, ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    if (ngx_xmpp_db_post(r) == NGX_OK) {
        return;
    }

    if (ctx->op != NGX_XMPP_PEP_LAST) {
        ngx_xmpp_pep_error(s, &ctx->iq_id, &ctx->iq_to, "wait",
                           "resource-constraint", NULL,
                           "storage is busy");
    }

    ngx_xmpp_db_destroy(r);
}


/*
 * The session's shared directory contacts (issue 6.3) as a JSON array
 * for the replay's query: they are subscribed both ways without a
 * roster row.  Localparts and domains hold no quote or backslash
 * (RFC 7622 3.3.1), but they are escaped anyway.
 */
static ngx_int_t
ngx_xmpp_pep_shared_json(ngx_xmpp_session_t *s, ngx_pool_t *pool,
    ngx_str_t *json)
{
    u_char              *p;
    size_t               size;
    ngx_uint_t           i, k;
    ngx_array_t          shared;
    ngx_xmpp_contact_t  *c;

    ngx_str_set(json, "[]");

    if (ngx_array_init(&shared, pool, 8, sizeof(ngx_xmpp_contact_t))
        != NGX_OK
        || ngx_xmpp_dir_shared_contacts(&s->jid.bare, pool, &shared)
           != NGX_OK
        || shared.nelts == 0)
    {
        return NGX_OK;
    }

    c = shared.elts;
    size = 2;

    for (i = 0; i < shared.nelts; i++) {
        size += 2 * c[i].jid.len + 3;
    }

    p = ngx_pnalloc(pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    json->data = p;
    *p++ = '[';

    for (i = 0; i < shared.nelts; i++) {
        if (i) {
            *p++ = ',';
        }

        *p++ = '"';

        for (k = 0; k < c[i].jid.len; k++) {
            if (c[i].jid.data[k] == '"' || c[i].jid.data[k] == '\\') {
                *p++ = '\\';
            }

            *p++ = c[i].jid.data[k];
        }

        *p++ = '"';
    }

    *p++ = ']';
    json->len = p - json->data;

    return NGX_OK;
}


/* called by ngx_xmpp_caps.c once the session's interests are known */
void
ngx_xmpp_pep_last_items(ngx_xmpp_session_t *s)
{
    ngx_str_t          *in[8], json;
    ngx_pool_t         *pool;
    ngx_xmpp_db_req_t  *r;

    pool = ngx_create_pool(4096, s->connection->log);
    if (pool == NULL) {
        return;
    }

    ngx_memzero(in, sizeof(in));

    if (ngx_xmpp_pep_shared_json(s, pool, &json) == NGX_OK) {
        in[3] = &json;
        r = ngx_xmpp_pep_req(s, NULL, NGX_XMPP_PEP_LAST, in);

        if (r) {
            ngx_xmpp_pep_post(s, r);
        }
    }

    ngx_destroy_pool(pool);
}


static ngx_uint_t
ngx_xmpp_pep_is(ngx_xmpp_node_t *n, const char *name, const char *ns)
{
    return n && ngx_xmpp_pep_str_is(&n->name, name)
           && ngx_xmpp_pep_str_is(&n->ns, ns);
}


static ngx_uint_t
ngx_xmpp_pep_elements(ngx_xmpp_node_t *n, ngx_xmpp_node_t **first)
{
    ngx_uint_t        count;
    ngx_xmpp_node_t  *c;

    count = 0;
    *first = NULL;

    for (c = n->child; c; c = c->next) {
        if (c->name.len) {
            if (count++ == 0) {
                *first = c;
            }
        }
    }

    return count;
}


/* XEP-0060 7.1: parses a publish into in[2] (id) and in[3] (payload) */
static ngx_int_t
ngx_xmpp_pep_parse_publish(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *pub, ngx_str_t *id, ngx_str_t *payload)
{
    u_char           *p;
    ngx_str_t        *v;
    ngx_xmpp_node_t  *item, *data;
    ngx_xmpp_wbuf_t  *b;

    if (ngx_xmpp_pep_elements(pub, &item) != 1
        || !ngx_xmpp_pep_is(item, "item", NGX_XMPP_NS_PUBSUB))
    {
        /* 7.1.3.6: a persistent node needs an item, and one at a time */
        ngx_xmpp_pep_st_error(s, st, "modify", "bad-request",
                           "item-required", NULL);
        return NGX_DECLINED;
    }

    switch (ngx_xmpp_pep_elements(item, &data)) {
    case 0:
        ngx_xmpp_pep_st_error(s, st, "modify", "bad-request",
                           "payload-required", NULL);
        return NGX_DECLINED;
    case 1:
        break;
    default:
        ngx_xmpp_pep_st_error(s, st, "modify", "bad-request",
                           "invalid-payload", NULL);
        return NGX_DECLINED;
    }

    v = ngx_xmpp_node_attr(item, "id");

    if (v && v->len) {
        if (v->len > NGX_XMPP_PEP_NAME_MAX) {
            ngx_xmpp_pep_st_error(s, st, "modify",
                               "not-acceptable", NULL,
                               "the item id is too long");
            return NGX_DECLINED;
        }

        *id = *v;

    } else {
        /* 7.1.2: the service makes an id unique within the node */
        p = ngx_pnalloc(st->pool, 2 * NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        id->data = p;
        id->len = ngx_sprintf(p, "%xL%08xD", (uint64_t) ngx_time(),
                              (uint32_t) ngx_random()) - p;
    }

    b = ngx_xmpp_wbuf_scratch(s->conf->pep_max_item_size);
    ngx_xmpp_serialize(b, data, NULL);

    /* the scratch buffer may be larger than its max: check the size */
    if (b->failed
        || (size_t) (b->last - b->start) > s->conf->pep_max_item_size)
    {
        /* 7.1.3.4 */
        ngx_xmpp_pep_st_error(s, st, "modify", "not-acceptable",
                           "payload-too-big", NULL);
        return NGX_DECLINED;
    }

    payload->len = b->last - b->start;
    payload->data = ngx_pnalloc(st->pool, payload->len);
    if (payload->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(payload->data, b->start, payload->len);

    return NGX_OK;
}


/* "max_items" and item ids of an items request (XEP-0060 6.5.7, 6.5.8) */
ngx_int_t
ngx_xmpp_pep_parse_items(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *a, ngx_uint_t *max, ngx_str_t *ids)
{
    u_char           *p;
    size_t            size;
    uint16_t          len;
    ngx_int_t         n;
    ngx_str_t        *v;
    ngx_uint_t        count;
    ngx_xmpp_node_t  *c;

    v = ngx_xmpp_node_attr(a, "max_items");

    if (v) {
        n = ngx_atoi(v->data, v->len);
        if (n == NGX_ERROR || n == 0) {
            ngx_xmpp_pep_st_error(s, st, "modify", "bad-request",
                               NULL, "max_items must be a positive number");
            return NGX_DECLINED;
        }

        *max = ngx_min((ngx_uint_t) n, s->conf->pep_max_items);
    }

    size = 0;
    count = 0;

    for (c = a->child; c; c = c->next) {
        if (!ngx_xmpp_pep_is(c, "item", NGX_XMPP_NS_PUBSUB)) {
            continue;
        }

        v = ngx_xmpp_node_attr(c, "id");

        if (v == NULL || v->len == 0 || v->len > NGX_XMPP_PEP_NAME_MAX
            || ++count > NGX_XMPP_PEP_IDS_MAX)
        {
            ngx_xmpp_pep_st_error(s, st, "modify", "bad-request",
                               NULL, "at most 32 item ids, each at most "
                               "255 bytes");
            return NGX_DECLINED;
        }

        size += sizeof(uint16_t) + v->len;
    }

    if (size == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(st->pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ids->data = p;
    ids->len = size;

    for (c = a->child; c; c = c->next) {
        if (ngx_xmpp_pep_is(c, "item", NGX_XMPP_NS_PUBSUB)) {
            v = ngx_xmpp_node_attr(c, "id");
            len = (uint16_t) v->len;
            p = ngx_cpymem(p, &len, sizeof(uint16_t));
            p = ngx_cpymem(p, v->data, v->len);
        }
    }

    return NGX_OK;
}


/* a node's options from a data form; errors answered here */
static ngx_int_t
ngx_xmpp_pep_parse_form(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *parent, ngx_xmpp_pep_config_t *c, ngx_uint_t options)
{
    ngx_int_t         rc;
    ngx_xmpp_node_t  *x;

    x = parent ? ngx_xmpp_node_child(parent, "x", "jabber:x:data") : NULL;

    rc = ngx_xmpp_pep_form(s->conf, st->pool, x, c);

    switch (rc) {
    case NGX_OK:
        return NGX_OK;
    case NGX_DECLINED:
        if (options) {
            /* XEP-0060 7.1.5: an option the node cannot have */
            ngx_xmpp_pep_st_error(s, st, "cancel", "conflict",
                               "precondition-not-met", NULL);
        } else {
            ngx_xmpp_pep_st_error(s, st, "modify",
                               "not-acceptable", NULL,
                               "an unsupported option value");
        }
        return NGX_DECLINED;
    case NGX_ABORT:
        ngx_xmpp_pep_st_error(s, st, "cancel", "policy-violation",
                           NULL, "max_items exceeds conclave_pep_max_items");
        return NGX_DECLINED;
    default:
        return NGX_ERROR;
    }
}



/* XEP-0060 7.2: one item id, and whether subscribers hear of it */
static ngx_int_t
ngx_xmpp_pep_parse_retract(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *a, ngx_str_t *id, ngx_uint_t *notify)
{
    ngx_str_t        *v;
    ngx_xmpp_node_t  *item;

    v = NULL;

    if (ngx_xmpp_pep_elements(a, &item) == 1
        && ngx_xmpp_pep_is(item, "item", NGX_XMPP_NS_PUBSUB))
    {
        v = ngx_xmpp_node_attr(item, "id");
    }

    if (v == NULL || v->len == 0 || v->len > NGX_XMPP_PEP_NAME_MAX) {
        /* 7.2.3.3 */
        ngx_xmpp_pep_st_error(s, st, "modify", "bad-request",
                              "item-required", NULL);
        return NGX_DECLINED;
    }

    *id = *v;

    v = ngx_xmpp_node_attr(a, "notify");
    *notify = v && (ngx_xmpp_pep_str_is(v, "true")
                    || ngx_xmpp_pep_str_is(v, "1"));

    return NGX_OK;
}


/* is the session's user a shared directory contact of owner (6.3)? */
ngx_uint_t
ngx_xmpp_pep_is_contact(ngx_xmpp_session_t *s, ngx_pool_t *pool,
    ngx_str_t *owner)
{
    ngx_uint_t           i;
    ngx_array_t          shared;
    ngx_xmpp_contact_t  *c;

    if (ngx_array_init(&shared, pool, 8, sizeof(ngx_xmpp_contact_t))
        != NGX_OK
        || ngx_xmpp_dir_shared_contacts(owner, pool, &shared) != NGX_OK)
    {
        return 0;
    }

    c = shared.elts;

    for (i = 0; i < shared.nelts; i++) {
        if (c[i].jid.len == s->jid.bare.len
            && ngx_strncmp(c[i].jid.data, s->jid.bare.data,
                           c[i].jid.len) == 0)
        {
            return 1;
        }
    }

    return 0;
}

/*
 * The pubsub#owner requests: configure (get, set) and delete.  The op,
 * or 0 when the request was answered (an error).
 */
static ngx_uint_t
ngx_xmpp_pep_owner_op(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *a, ngx_uint_t get, ngx_xmpp_pep_config_t *want)
{
    if (ngx_xmpp_pep_str_is(&a->name, "configure")) {
        if (!get
            && ngx_xmpp_pep_parse_form(s, st, a, want, 0) != NGX_OK)
        {
            return 0;
        }

        return get ? NGX_XMPP_PEP_CONF_GET : NGX_XMPP_PEP_CONF_SET;
    }

    if (!get && ngx_xmpp_pep_str_is(&a->name, "delete")) {
        return NGX_XMPP_PEP_DELETE;
    }

    ngx_xmpp_pep_st_error(s, st, "cancel", "feature-not-implemented", NULL,
                          NULL);
    return 0;
}


/*
 * XEP-0163 on a bare JID of ours: q is <pubsub/> (pubsub or
 * pubsub#owner).  Only the owner changes anything; others may read
 * items (XEP-0060 6.5) as the access model allows.
 */
void
ngx_xmpp_pep_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *q)
{
    ngx_str_t            *owner, *node, id, payload, ids, *in[8];
    ngx_uint_t            get, own, op, max, notify;
    u_char                avatar[41];
    ngx_xmpp_node_t      *a, *opts;
    ngx_xmpp_db_req_t    *r;
    ngx_xmpp_pep_ctx_t   *ctx;
    ngx_xmpp_pep_config_t want;

    get = ngx_xmpp_pep_str_is(&st->type, "get");
    avatar[0] = '\0';

    if (!get && !ngx_xmpp_pep_str_is(&st->type, "set")) {
        return;
    }

    owner = st->has_to ? &st->to.bare : &s->jid.bare;
    own = (owner->len == s->jid.bare.len
           && ngx_strncmp(owner->data, s->jid.bare.data, owner->len) == 0);

    a = ngx_xmpp_node_first_element(q);

    if (a == NULL) {
        ngx_xmpp_pep_st_error(s, st, "modify", "bad-request", NULL, NULL);
        return;
    }

    if (!own && !(get && ngx_xmpp_pep_str_is(&q->ns, NGX_XMPP_NS_PUBSUB)
                  && ngx_xmpp_pep_str_is(&a->name, "items")))
    {
        /* XEP-0163 section 3: a PEP service belongs to its account */
        ngx_xmpp_pep_st_error(s, st, "auth", "forbidden", NULL, NULL);
        return;
    }

    node = ngx_xmpp_node_attr(a, "node");

    if (node == NULL || node->len == 0) {
        /* instant nodes are not offered (XEP-0060 8.1.2) */
        ngx_xmpp_pep_st_error(s, st, "modify", "bad-request",
                              "nodeid-required", NULL);
        return;
    }

    if (node->len > NGX_XMPP_PEP_NAME_MAX) {
        ngx_xmpp_pep_st_error(s, st, "modify", "not-acceptable", NULL,
                              "the node name is too long");
        return;
    }

    if (own && ngx_xmpp_pep_str_is(node, NGX_XMPP_NS_STORAGE_BM)
        && ngx_xmpp_pep_str_is(&q->ns, NGX_XMPP_NS_PUBSUB))
    {
        /* XEP-0402 5.3: XEP-0048's XEP-0223 node shows the bookmarks */
        ngx_xmpp_private_pep(s, st, a, get);
        return;
    }

    /* XEP-0084 nodes of directory photos are the directory's (0398) */
    if (ngx_xmpp_avatar_pep(s, st, a, owner, node, get) != NGX_DECLINED) {
        return;
    }

    ngx_memzero(in, sizeof(in));
    in[0] = owner;
    in[1] = node;

    ngx_xmpp_pep_config_default(&want);
    max = 0;
    notify = 0;
    ngx_str_null(&ids);

    if (ngx_xmpp_pep_str_is(&q->ns, NGX_XMPP_NS_PUBSUB_OWNER)) {
        op = ngx_xmpp_pep_owner_op(s, st, a, get, &want);

        if (op == 0) {
            return;
        }

    } else if (get && ngx_xmpp_pep_str_is(&a->name, "items")) {
        op = NGX_XMPP_PEP_ITEMS;

        if (ngx_xmpp_pep_parse_items(s, st, a, &max, &ids) != NGX_OK) {
            return;
        }

        in[4] = &ids;

    } else if (!get && ngx_xmpp_pep_str_is(&a->name, "publish")) {
        op = NGX_XMPP_PEP_PUBLISH;

        if (ngx_xmpp_pep_parse_publish(s, st, a, &id, &payload) != NGX_OK)
        {
            return;
        }

        in[2] = &id;
        in[3] = &payload;

        if (ngx_xmpp_pep_str_is(node, NGX_XMPP_NS_AVATAR_META)
            && ngx_xmpp_avatar_metadata(s, st, a, avatar) != NGX_OK)
        {
            return;
        }

        /* XEP-0060 7.1.5; XEP-0223 section 3, XEP-0402 section 3 */
        opts = ngx_xmpp_node_child(q, "publish-options", NGX_XMPP_NS_PUBSUB);

        if (ngx_xmpp_pep_parse_form(s, st, opts, &want, 1) != NGX_OK) {
            return;
        }

    } else if (!get && ngx_xmpp_pep_str_is(&a->name, "retract")) {
        op = NGX_XMPP_PEP_RETRACT;

        if (ngx_xmpp_pep_parse_retract(s, st, a, &id, &notify) != NGX_OK) {
            return;
        }

        in[2] = &id;

    } else if (!get && ngx_xmpp_pep_str_is(&a->name, "create")) {
        op = NGX_XMPP_PEP_CREATE;

        opts = ngx_xmpp_node_child(q, "configure", NGX_XMPP_NS_PUBSUB);

        if (ngx_xmpp_pep_parse_form(s, st, opts, &want, 0) != NGX_OK) {
            return;
        }

    } else {
        /* subscriptions are implied by presence (XEP-0163 section 4) */
        ngx_xmpp_pep_st_error(s, st, "cancel", "feature-not-implemented",
                              NULL, NULL);
        return;
    }

    r = ngx_xmpp_pep_req(s, st, op, in);
    if (r == NULL) {
        return;
    }

    ctx = r->ctx;
    ctx->want = want;
    ctx->max_req = max;
    ctx->notify = notify;

    if (op == NGX_XMPP_PEP_PUBLISH
        && ngx_xmpp_pep_str_is(node, NGX_XMPP_NS_AVATAR_META))
    {
        /* XEP-0398 3.1: checked against the data node in the same run */
        ctx->avatar = 1;
        ngx_memcpy(ctx->avatar_hash, avatar, sizeof(avatar));
    }

    if (!own && op == NGX_XMPP_PEP_ITEMS) {
        ctx->contact = ngx_xmpp_pep_is_contact(s, st->pool, owner);
    }

    ngx_xmpp_pep_post(s, r);
}
