
/*
 * IQs that the server answers itself, for its own JID or on behalf of
 * the user's account (RFC 6120 section 10.3): XEP-0199 ping, XEP-0030
 * service discovery, the legacy session request, and the roster
 * (RFC 6121 section 2, ngx_xmpp_roster.c).  Anything else is
 * <service-unavailable/> (RFC 6120 8.3.3.19).
 */


#include "ngx_xmpp.h"


/*
 * The server's features, in one table: the disco#info answer and its
 * XEP-0115 ver (ngx_xmpp_caps_server_ver) both come from it.
 */
const char  *ngx_xmpp_disco_features[] = {
    NGX_XMPP_NS_DISCO_INFO,
    NGX_XMPP_NS_DISCO_ITEMS,
    NGX_XMPP_NS_PING,
    "jabber:iq:search",
    NGX_XMPP_NS_PRIVATE,
    "http://jabber.org/protocol/caps",
    NGX_XMPP_NS_CARBONS,
    NGX_XMPP_NS_BLOCKING,
    NULL
};


/* XEP-0163 section 6: the account is a PEP service (ngx_xmpp_pep.c) */
#define NGX_XMPP_DISCO_PEP                                                  \
    "<identity category='pubsub' type='pep'/>"                              \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#access-open'/>"                   \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#access-presence'/>"               \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#access-whitelist'/>"              \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#auto-create'/>"                   \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#config-node'/>"                   \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#create-nodes'/>"                  \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#delete-items'/>"                  \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#delete-nodes'/>"                  \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#filtered-notifications'/>"        \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#item-ids'/>"                      \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#last-published'/>"                \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#persistent-items'/>"              \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#publish'/>"                       \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#publish-options'/>"               \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#retract-items'/>"                 \
    "<feature var='" NGX_XMPP_NS_PUBSUB "#retrieve-items'/>"                \
    "<feature var='" NGX_XMPP_NS_BOOKMARKS "#compat'/>"                     \
    "<feature var='" NGX_XMPP_NS_BOOKMARKS "#compat-pep'/>"


static void
ngx_xmpp_disco_reply(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    const char *payload)
{
    ngx_str_t        *to;
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(16384);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='result'"
                      " from='");

    to = ngx_xmpp_node_attr(st->node, "to");

    if (st->has_to && to) {
        ngx_xmpp_wbuf_escs(b, to);
    } else {
        ngx_xmpp_wbuf_nstr(b, &s->conf->domain);
    }

    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_escs(b, &st->id);

    if (payload) {
        ngx_xmpp_wbuf_lit(b, "'>");
        ngx_xmpp_wbuf_str(b, payload);
        ngx_xmpp_wbuf_lit(b, "</iq>");

    } else {
        ngx_xmpp_wbuf_lit(b, "'/>");
    }

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


static ngx_int_t
ngx_xmpp_disco_is(ngx_xmpp_node_t *q, const char *name, const char *ns)
{
    return q->name.len == ngx_strlen(name)
           && ngx_strncmp(q->name.data, name, q->name.len) == 0
           && q->ns.len == ngx_strlen(ns)
           && ngx_strncmp(q->ns.data, ns, q->ns.len) == 0;
}


/* no node, or the node#ver of our XEP-0115 caps (section 6.2) */
static ngx_uint_t
ngx_xmpp_disco_caps_node(ngx_xmpp_node_t *q)
{
    size_t      len;
    ngx_str_t  *node, *ver;

    node = ngx_xmpp_node_attr(q, "node");

    if (node == NULL) {
        return 1;
    }

    ver = ngx_xmpp_caps_server_ver();
    len = sizeof(NGX_XMPP_CAPS_NODE "#") - 1;

    return node->len == len + ver->len
           && ngx_strncmp(node->data, NGX_XMPP_CAPS_NODE "#", len) == 0
           && ngx_strncmp(node->data + len, ver->data, ver->len) == 0;
}


/* XEP-0030 section 3.1 for the server, from ngx_xmpp_disco_features */
static void
ngx_xmpp_disco_server(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_str_t *node)
{
    ngx_uint_t        i;
    ngx_xmpp_wbuf_t   b;

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 8192;

    ngx_xmpp_wbuf_lit(&b, "<query xmlns='" NGX_XMPP_NS_DISCO_INFO "'");

    if (node) {
        ngx_xmpp_wbuf_lit(&b, " node='");
        ngx_xmpp_wbuf_escs(&b, node);
        ngx_xmpp_wbuf_lit(&b, "'");
    }

    ngx_xmpp_wbuf_lit(&b, "><identity category='" NGX_XMPP_DISCO_CATEGORY
                      "' type='" NGX_XMPP_DISCO_TYPE "' name='"
                      NGX_XMPP_DISCO_NAME "'/>");

    for (i = 0; ngx_xmpp_disco_features[i]; i++) {
        ngx_xmpp_wbuf_lit(&b, "<feature var='");
        ngx_xmpp_wbuf_str(&b, ngx_xmpp_disco_features[i]);
        ngx_xmpp_wbuf_lit(&b, "'/>");
    }

    ngx_xmpp_wbuf_lit(&b, "</query>");
    ngx_xmpp_wbuf_add(&b, "", 1);

    if (b.failed) {
        ngx_xmpp_router_error(s, st, "wait", "internal-server-error");

    } else {
        ngx_xmpp_disco_reply(s, st, (const char *) b.start);
    }

    ngx_xmpp_wbuf_free(&b);
}


/*
 * XEP-0030 section 4: the server's items are its components, the
 * conference service when conclave_muc_domain is set.
 */
static void
ngx_xmpp_disco_items(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_xmpp_wbuf_t  b;

    if (s->conf->muc_domain.len == 0) {
        ngx_xmpp_disco_reply(s, st,
            "<query xmlns='" NGX_XMPP_NS_DISCO_ITEMS "'/>");
        return;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 4096;

    ngx_xmpp_wbuf_lit(&b, "<query xmlns='" NGX_XMPP_NS_DISCO_ITEMS "'>"
                      "<item jid='");
    ngx_xmpp_wbuf_escs(&b, &s->conf->muc_domain);
    ngx_xmpp_wbuf_lit(&b, "' name='Chatrooms'/></query>");
    ngx_xmpp_wbuf_add(&b, "", 1);

    if (!b.failed) {
        ngx_xmpp_disco_reply(s, st, (const char *) b.start);

    } else {
        ngx_xmpp_router_error(s, st, "wait", "resource-constraint");
    }

    ngx_xmpp_wbuf_free(&b);
}


void
ngx_xmpp_disco_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_uint_t        get, account;
    ngx_xmpp_node_t  *q;

    get = (st->type.len == 3 && ngx_strncmp(st->type.data, "get", 3) == 0);

    if (!get && !(st->type.len == 3
                  && ngx_strncmp(st->type.data, "set", 3) == 0))
    {
        /* results and errors addressed to the server end here */
        (void) ngx_xmpp_caps_response(s, st);
        return;
    }

    q = ngx_xmpp_node_first_element(st->node);
    account = st->has_to && st->to.local.len;

    if (get && ngx_xmpp_disco_is(q, "ping", NGX_XMPP_NS_PING)) {
        ngx_xmpp_disco_reply(s, st, NULL);
        return;
    }

    if (!get && ngx_xmpp_disco_is(q, "session", NGX_XMPP_NS_SESSION)) {
        ngx_xmpp_disco_reply(s, st, NULL);
        return;
    }

    if (get && !account
        && ngx_xmpp_disco_is(q, "query", NGX_XMPP_NS_DISCO_INFO)
        && ngx_xmpp_disco_caps_node(q))
    {
        ngx_xmpp_disco_server(s, st, ngx_xmpp_node_attr(q, "node"));
        return;
    }

    if (get && account
        && ngx_xmpp_disco_is(q, "query", NGX_XMPP_NS_DISCO_INFO)
        && ngx_xmpp_node_attr(q, "node") == NULL)
    {
        /* XEP-0030 section 3.1 on the user's own bare JID */
        ngx_xmpp_disco_reply(s, st,
            "<query xmlns='" NGX_XMPP_NS_DISCO_INFO "'>"
            "<identity category='account' type='registered'/>"
            "<feature var='" NGX_XMPP_NS_DISCO_INFO "'/>"
            "<feature var='" NGX_XMPP_NS_MAM "'/>"
            "<feature var='" NGX_XMPP_NS_MAM "#extended'/>"
            "<feature var='urn:xmpp:sid:0'/>"
            NGX_XMPP_DISCO_PEP
            "<feature var='" NGX_XMPP_NS_PEP_VCARD "'/>"
            "</query>");
        return;
    }

    if (get && ngx_xmpp_disco_is(q, "query", NGX_XMPP_NS_DISCO_ITEMS)
        && ngx_xmpp_node_attr(q, "node") == NULL)
    {
        if (!account) {
            ngx_xmpp_disco_items(s, st);
            return;
        }

        ngx_xmpp_disco_reply(s, st,
            "<query xmlns='" NGX_XMPP_NS_DISCO_ITEMS "'/>");
        return;
    }

    if (!account
        && (ngx_xmpp_disco_is(q, "enable", NGX_XMPP_NS_CARBONS)
            || ngx_xmpp_disco_is(q, "disable", NGX_XMPP_NS_CARBONS)))
    {
        ngx_xmpp_carbons_iq(s, st, q);
        return;
    }

    if (q->ns.len == sizeof(NGX_XMPP_NS_BLOCKING) - 1
        && ngx_strncmp(q->ns.data, NGX_XMPP_NS_BLOCKING, q->ns.len) == 0)
    {
        /* XEP-0191: the account's own blocklist, or none */
        if (account && (st->to.bare.len != s->jid.bare.len
                        || ngx_strncmp(st->to.bare.data, s->jid.bare.data,
                                       s->jid.bare.len) != 0))
        {
            ngx_xmpp_router_error(s, st, "auth", "forbidden");
            return;
        }

        ngx_xmpp_blocking_iq(s, st, q);
        return;
    }

    if (ngx_xmpp_disco_is(q, "query", NGX_XMPP_NS_ROSTER)) {
        if (account && (st->to.bare.len != s->jid.bare.len
                        || ngx_strncmp(st->to.bare.data, s->jid.bare.data,
                                       s->jid.bare.len) != 0))
        {
            /* RFC 6121 2.3.3: only the account itself */
            ngx_xmpp_router_error(s, st, "auth", "forbidden");
            return;
        }

        ngx_xmpp_roster_iq(s, st, q);
        return;
    }

    if (!account && ngx_xmpp_disco_is(q, "query", "jabber:iq:search")) {
        ngx_xmpp_search_iq(s, st);
        return;
    }

    ngx_xmpp_router_error(s, st, "cancel", "service-unavailable");
}
